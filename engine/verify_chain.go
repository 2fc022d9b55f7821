package engine

import (
	"bytes"
	"context"

	"vbackup/chain"
	"vbackup/contentsum"
)

// pointDigests holds, while verifying a whole folder, the chunk digests of
// each verified point that a later one builds on, so that an incremental
// reads only the chunks its overlay holds itself and takes the others'
// digests from the point below: n backups of a disk cost one read of
// what is stored, not n reads of the whole disk.
//
// The digests are computed here from the data, never taken from the
// DISK.sums files beside the images: those were written at backup time,
// and trusting them would hide damage done since.
//
// Digests take 32 bytes per MiB of disk (32 MiB for 1 TiB), held only
// until the last point built on them is verified: in a straight chain,
// one disk's worth per disk.
type pointDigests struct {
	kept  map[string]digests // backup/disk
	users map[string]int     // backup/disk: the points built on it that are yet to be verified
}

type digests struct {
	sums []byte // as contentsum.Options.Digests writes them
	size uint64 // of the content they describe
}

func newPointDigests(backups []*chain.Backup) *pointDigests {
	p := &pointDigests{kept: map[string]digests{}, users: map[string]int{}}
	for _, b := range backups {
		for _, d := range b.Disks {
			if d.Level == chain.Incremental {
				p.users[d.Backing+"/"+d.Name]++
			}
		}
	}
	return p
}

// options prepares the checksum of disk d of b: with the digests of the
// point it builds on, if they are held, and the ranges its own image
// holds; and with somewhere to write its own digests if a later point
// needs them. keep, called once the checksum matches, holds those.
func (p *pointDigests) options(ctx context.Context, b *chain.Backup, d chain.Disk) (opts contentsum.Options, keep func(contentsum.Sum), err error) {
	keep = func(contentsum.Sum) {}
	if p == nil {
		return opts, keep, nil
	}
	if d.Level == chain.Incremental {
		if below, ok := p.kept[d.Backing+"/"+d.Name]; ok {
			changed, _, err := topLayer(ctx, b.File(d))
			if err != nil {
				return opts, keep, err
			}
			opts.Earlier = &contentsum.Earlier{Digests: bytes.NewReader(below.sums), Size: below.size, Changed: changed}
		}
	}
	key := b.Name() + "/" + d.Name
	if p.users[key] > 0 {
		var buf bytes.Buffer
		opts.Digests = &buf
		keep = func(sum contentsum.Sum) { p.kept[key] = digests{sums: buf.Bytes(), size: sum.Size} }
	}
	return opts, keep, nil
}

// done drops what disk d of b needed from the point below, once the last
// point built on that is verified.
func (p *pointDigests) done(b *chain.Backup, d chain.Disk) {
	if p == nil || d.Level != chain.Incremental {
		return
	}
	key := d.Backing + "/" + d.Name
	if p.users[key]--; p.users[key] <= 0 {
		delete(p.users, key)
		delete(p.kept, key)
	}
}
