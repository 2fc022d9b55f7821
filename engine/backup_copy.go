package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"vbackup/chain"
	exportfetch "vbackup/fetch"
	"vbackup/job"
	"vbackup/progress"
	"vbackup/xmlgen"
)

// plan builds the job: every chosen disk at its level, the checkpoint over
// the disks that can carry a bitmap.
func (b *Backup) plan(ctx context.Context) (job.Plan, error) {
	spec := xmlgen.BackupSpec{Pull: !b.req.Push, Checkpoint: b.name}
	for _, c := range b.dec.Disks {
		d := xmlgen.BackupDisk{Name: c.Name, Full: c.Level == chain.Full}
		if c.Level == chain.Incremental {
			d.Incremental = b.dec.From.Name()
		}
		if b.req.Push {
			d.Target, d.Format = filepath.Join(b.pending.Dir(), c.Name+".qcow2"), "qcow2"
		}
		spec.Disks = append(spec.Disks, d)
	}
	if b.req.Push {
		if err := job.HandToQEMU(b.pending.Dir(), b.domainDisks); err != nil {
			return job.Plan{}, err
		}
	}
	// Where scratch files go is libvirt's business here: its notes are
	// not the user's.
	quiet := progress.NewNotifier(nil, nil)
	sockets := b.req.Sockets
	sockets.Reading = !b.req.Push
	return job.NewPlan(ctx, b.dom, job.PlanRequest{Spec: spec, CheckpointDescription: checkpointDescription(b.req.Dir, b.folder),
		Local: true, Disks: b.domainDisks, Sockets: sockets, Now: b.req.Now()}, quiet)
}

// pull reads every export into the pending backup, then ends the job.
func (b *Backup) pull(ctx context.Context, printer progress.Printer) (map[string]uint64, error) {
	j, ok, err := job.Current(ctx, b.dom)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("domain %q: the pull job ended before its exports could be read", b.dom.Name())
	}
	srv, done, err := b.req.Sockets.Reach(ctx, j.Server)
	if err != nil {
		return nil, fmt.Errorf("domain %q: %w", b.dom.Name(), err)
	}
	defer done()
	var disks []exportfetch.Disk
	for _, d := range j.Disks {
		fd := exportfetch.Disk{Name: d.Name, URI: job.NBDURI(srv, d.ExportName), Format: "qcow2", Bitmap: d.Bitmap(),
			Path: filepath.Join(b.pending.Dir(), d.Name+".qcow2"), Compress: b.req.Compress}
		if fd.Bitmap != "" {
			prev, _ := b.dec.From.Disk(d.Name)
			fd.Backing = b.pending.Backing(b.dec.From, prev)
		}
		disks = append(disks, fd)
	}
	copied, err := b.fetch(ctx, printer, disks)
	if err != nil {
		return nil, fmt.Errorf("reading the exports: %w", err)
	}
	if err := job.End(ctx, b.dom); err != nil {
		return nil, err
	}
	// The socket's folder goes while the manifest is made: on libvirtd's
	// host, through SSH, that is a login (0.28 s here) nothing waits for.
	b.tidy.Go(func() { b.req.Sockets.Remove(b.dom.Name()) })
	return copied, nil
}

// fetch reads the exports into the pending backup and says what each
// disk's copy read. A full plain image is summed as it is written
// (backup_written.go); the others are read back at once to be summed, so
// they stay in the page cache for that.
func (b *Backup) fetch(ctx context.Context, printer progress.Printer, disks []exportfetch.Disk) (map[string]uint64, error) {
	for i := range disks {
		disks[i].Sum = disks[i].Bitmap == "" && disks[i].Compress == ""
	}
	res, err := exportfetch.Run(ctx, disks, exportfetch.Options{Connections: 4, KeepCache: true, Printer: printer, Notes: b.notes, Now: b.req.Now, Limit: b.req.Limit})
	if err != nil {
		return nil, err
	}
	copied := map[string]uint64{}
	b.summed = map[string]exportfetch.DiskResult{}
	for _, d := range res.Disks {
		copied[d.Name] = d.Copied
		if d.Summed {
			b.summed[d.Name] = d
		}
	}
	return copied, nil
}

// push waits for libvirt to write the images, then gives each incremental
// image its place in the chain: libvirt writes the changed clusters into a
// qcow2 of their own.
func (b *Backup) push(ctx context.Context, printer progress.Printer) (map[string]uint64, error) {
	err := job.Watch(ctx, b.dom, job.WatchOptions{Printer: printer, Notes: b.notes, KeepRecord: true, Now: b.req.Now,
		Sockets: b.req.Sockets, Reconnect: b.req.Reconnect})
	if err != nil {
		return nil, err
	}
	copied := map[string]uint64{}
	for _, c := range b.dec.Disks {
		file := filepath.Join(b.pending.Dir(), c.Name+".qcow2")
		if err := waitReleased(ctx, file); err != nil {
			return nil, fmt.Errorf("disk %s: %w", c.Name, err)
		}
		_, n, err := topLayer(ctx, file)
		if err != nil {
			return nil, err
		}
		copied[c.Name] = n
		if c.Level != chain.Incremental {
			continue
		}
		prev, _ := b.dec.From.Disk(c.Name)
		backing := b.pending.Backing(b.dec.From, prev)
		// -u: only the header changes; the backing file is read as it is.
		if _, err := qemuImg(ctx, "", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, file); err != nil {
			return nil, fmt.Errorf("disk %s: setting the backing file: %w", c.Name, err)
		}
	}
	return copied, nil
}

// waitReleased waits until QEMU has let go of a push target. The job's end
// can reach us a moment before QEMU closes the image (seen on a loaded
// machine: the read-back's qemu-nbd then failed to get its "write" lock),
// and until then the image cannot be read, rebased or trusted as complete.
func waitReleased(ctx context.Context, file string) error {
	const wait, every = 30 * time.Second, 100 * time.Millisecond
	deadline := time.Now().Add(wait)
	for {
		// Without -U, qemu-img takes the image's locks as a reader does.
		_, err := qemuImg(ctx, "", "info", "-f", "qcow2", file)
		if err == nil || !strings.Contains(err.Error(), "lock") {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QEMU still holds %s %s after the job ended: %w", file, wait, err)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(every):
		}
	}
}
