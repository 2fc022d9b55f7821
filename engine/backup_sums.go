package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
)

// manifest describes the backup, with a checksum of each disk's content
// read back through its chain: what a restore will produce.
func (b *Backup) manifest(ctx context.Context, started time.Time, copied map[string]uint64) (chain.Manifest, error) {
	m := chain.Manifest{Time: started, Level: b.dec.Level, Mode: "pull", Folder: b.folder}
	if b.req.Push {
		m.Mode = "push"
	}
	m.Domain.UUID, m.Domain.Name = b.uuid, b.dom.Name()
	var err error
	if m.Domain.XML, err = b.dom.XML(ctx, true); err != nil {
		return m, err
	}
	cp, cpXML, err := b.checkpointMade(ctx)
	if err != nil {
		return m, err
	}
	m.Checkpoint = chain.Checkpoint{Name: b.name, Parent: cp.Parent, XML: cpXML}
	tracked := map[string]bool{}
	for _, d := range cp.Disks {
		tracked[d.Name] = d.Checkpoint == "bitmap"
	}
	if len(b.summed) < len(b.dec.Disks) {
		b.notes.Infof("Reading the backup back to checksum it...")
	}
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
// keeps its chunk digests beside the image: every chunk's for a full, only
// the changed chunks' for an incremental. An incremental reads only the
// chunks its overlay changed, taking the others' digests from the backup it
// builds on, once they are proven to be that backup's.
func (b *Backup) checksum(ctx context.Context, d *chain.Disk) (contentsum.Sum, error) {
	image := filepath.Join(b.pending.Dir(), d.File)
	if w, ok := b.summed[d.Name]; ok {
		if err := checkWritten(ctx, image, w); err != nil {
			return contentsum.Sum{}, err
		}
		d.Digests, d.DigestsChanged = allDigestsFile(d.Name), false
		return w.Sum, b.writeDigestFile(d.Digests, w.Digests)
	}
	// Every chunk's digest is kept in memory (32 bytes per MiB: 32 MiB for
	// 1 TiB), and the file's form chosen once the sum is done.
	var all bytes.Buffer
	opts := contentsum.Options{Digests: &all}
	var changed []contentsum.Range
	var prevSize uint64
	if d.Level == chain.Incremental {
		var err error
		if changed, _, err = topLayer(ctx, image); err != nil {
			return contentsum.Sum{}, err
		}
		prev, _ := b.dec.From.Disk(d.Name)
		prevSize = prev.VirtualSize
		if earlier := b.earlier(d.Name, image); earlier != nil {
			opts.Earlier = &contentsum.Earlier{Digests: bytes.NewReader(earlier), Size: prevSize, Changed: changed}
		}
	}
	sum, err := contentsum.File(ctx, image, d.Format, opts)
	if err != nil {
		return sum, err
	}
	// Only the changed chunks', where the chain below holds the others':
	// an incremental that could build on the digests below, of the same
	// size. Otherwise every chunk's, from which the next ones build.
	d.Digests, d.DigestsChanged = allDigestsFile(d.Name), false
	data := all.Bytes()
	if opts.Earlier != nil && sum.Size == prevSize {
		d.Digests, d.DigestsChanged = changedDigestsFile(d.Name), true
		data = recordsOf(data, changed)
	}
	return sum, b.writeDigestFile(d.Digests, data)
}

// writeDigestFile writes a new digest file into the pending backup, which
// its commit syncs.
func (b *Backup) writeDigestFile(name string, data []byte) error {
	f, err := os.OpenFile(filepath.Join(b.pending.Dir(), name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Close()
}

// earlier is every chunk digest of a disk in the backup an incremental
// builds on, or nil (everything is then read) when they cannot be had or
// are not those of its checksum.
func (b *Backup) earlier(disk, image string) []byte {
	prev, _ := b.dec.From.Disk(disk)
	if cur, err := virtualSize(image); err == nil && cur != prev.VirtualSize {
		b.notes.Notef("note: disk %s changed size since backup %s: reading all of it to checksum it", disk, b.dec.From.Name())
		return nil
	}
	all, err := digestsAt(b.store, b.dec.From, disk)
	if err != nil {
		b.notes.Notef("note: the chunk digests of %s in backup %s %v: reading all of it to checksum it", disk, b.dec.From.Name(), err)
		return nil
	}
	return all
}
