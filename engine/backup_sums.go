package engine

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/virt"
)

// manifest describes the backup, with a checksum of each disk's content
// read back through its chain: what a restore will produce.
func (b *Backup) manifest(ctx context.Context, started time.Time, copied map[string]uint64) (chain.Manifest, error) {
	m := chain.Manifest{Time: started, Level: b.dec.Level, Mode: "pull"}
	if b.req.Push {
		m.Mode = "push"
	}
	m.Domain.UUID, m.Domain.Name = b.uuid, b.dom.Name()
	var err error
	if m.Domain.XML, err = b.dom.XML(ctx, true); err != nil {
		return m, err
	}
	cp, err := b.dom.Checkpoint(ctx, b.name)
	if err != nil {
		return m, fmt.Errorf("the checkpoint made with the job: %w", err)
	}
	m.Checkpoint = chain.Checkpoint{Name: b.name, Parent: cp.Parent}
	if m.Checkpoint.XML, err = b.dom.CheckpointXML(ctx, b.name, virt.XMLFlags{}); err != nil {
		return m, err
	}
	tracked := map[string]bool{}
	for _, d := range cp.Disks {
		tracked[d.Name] = d.Checkpoint == "bitmap"
	}
	b.notes.Infof("Reading the backup back to checksum it...")
	for _, c := range b.dec.Disks {
		d := chain.Disk{Name: c.Name, File: c.Name + ".qcow2", Format: "qcow2", Level: c.Level, Reason: c.Reason,
			Bitmap: tracked[c.Name], Copied: copied[c.Name]}
		if c.Level == chain.Incremental {
			d.Backing = b.dec.From.Name()
		}
		sum, err := b.checksum(ctx, &d)
		if err != nil {
			return m, fmt.Errorf("disk %s: %w", c.Name, err)
		}
		d.VirtualSize, d.Checksum = sum.Size, sum.String()
		m.Disks = append(m.Disks, d)
	}
	return m, nil
}

// checksum computes a disk's content checksum through its new chain, and
// keeps its chunk digests beside the image. An incremental reads only the
// chunks its overlay changed, taking the others' digests from the backup it
// builds on, once they are proven to be that backup's.
func (b *Backup) checksum(ctx context.Context, d *chain.Disk) (contentsum.Sum, error) {
	image := filepath.Join(b.pending.Dir(), d.File)
	d.Digests = d.Name + ".sums"
	f, err := os.OpenFile(filepath.Join(b.pending.Dir(), d.Digests), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return contentsum.Sum{}, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	opts := contentsum.Options{Digests: w}
	if d.Level == chain.Incremental {
		prev, _ := b.dec.From.Disk(d.Name)
		earlier, closeEarlier, err := b.earlier(ctx, prev, image)
		if err != nil {
			return contentsum.Sum{}, err
		}
		defer closeEarlier()
		opts.Earlier = earlier
	}
	sum, err := contentsum.File(ctx, image, d.Format, opts)
	if err != nil {
		return sum, err
	}
	if err := w.Flush(); err != nil {
		return sum, err
	}
	return sum, f.Close()
}

// earlier is the state of a disk in the backup an incremental builds on,
// or nil (everything is then read) when its digests are missing or are
// not those of its checksum.
func (b *Backup) earlier(ctx context.Context, prev chain.Disk, image string) (*contentsum.Earlier, func(), error) {
	none := func() {}
	if prev.Digests == "" {
		return nil, none, nil
	}
	f, err := os.Open(b.dec.From.File(chain.Disk{File: prev.Digests}))
	if err != nil {
		b.notes.Notef("note: %v: reading all of %s to checksum it", err, prev.Name)
		return nil, none, nil
	}
	want, perr := contentsum.Parse(prev.Checksum)
	got, err := contentsum.OfDigests(bufio.NewReader(f), prev.VirtualSize)
	if perr != nil || err != nil || !got.Equal(want) {
		f.Close()
		b.notes.Notef("note: the chunk digests of %s in backup %s do not match its checksum: reading all of it to checksum it", prev.Name, b.dec.From.Name())
		return nil, none, nil
	}
	changed, _, err := topLayer(ctx, image)
	if err != nil {
		f.Close()
		return nil, none, err
	}
	return &contentsum.Earlier{Digests: f, Size: prev.VirtualSize, Changed: changed}, func() { f.Close() }, nil
}
