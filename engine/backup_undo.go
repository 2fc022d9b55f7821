package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"vbackup/job"
	"vbackup/virt"
)

// fail undoes a backup that did not complete: the job ends, its checkpoint
// goes (it would claim data no manifest holds), and the folder is left as
// it was. The error wraps cause, and ctx's cause when ctx ended first.
func (b *Backup) fail(runCtx context.Context, cause error) error {
	if c := context.Cause(runCtx); c != nil && !errors.Is(cause, c) {
		cause = fmt.Errorf("%w (%w)", c, cause)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), 2*time.Minute)
	defer cancel()
	var problems []string
	if b.started {
		if rec, ok, err := b.dom.BackupRecord(ctx); err == nil && ok {
			rec.Discard = true
			_ = b.dom.SetBackupRecord(ctx, rec)
		}
		if stats, err := b.dom.Job(ctx, false); err == nil && stats.State == virt.JobRunning {
			_ = job.End(ctx, b.dom)
		}
		if err := job.Discard(ctx, b.dom, b.name, b.notes); err != nil {
			problems = append(problems, err.Error())
		} else if st, err := b.dom.State(ctx); err == nil && !st.Active && !b.offline {
			b.dropStoppedBitmaps(ctx)
		}
		if err := b.dom.ClearBackupRecord(ctx); err != nil {
			// A domain that stopped took its live record with it.
			if st, serr := b.dom.State(ctx); serr != nil || st.Active {
				problems = append(problems, err.Error())
			}
		}
	}
	if st, err := b.dom.State(ctx); err == nil && !st.Active && !b.req.Push {
		b.req.Sockets.RemoveDead(b.dom.Name())
	} else {
		b.req.Sockets.Remove(b.dom.Name())
	}
	if b.pending != nil {
		if err := b.pending.Abort(); err != nil {
			problems = append(problems, err.Error())
		}
	}
	err := fmt.Errorf("backup %s of domain %q failed: %w; %s is as it was", b.name, b.dom.Name(), cause, b.req.Dir)
	if len(problems) > 0 {
		err = fmt.Errorf("%w; while cleaning up: %s", err, strings.Join(problems, "; "))
	}
	return err
}

// dropStoppedBitmaps removes the failed job's bitmaps from the images of a
// domain that stopped during it: QEMU stored them as it closed the images,
// and libvirt, which deletes only the metadata of an inactive domain's
// checkpoint, leaves them there, for QEMU to update on every write once the
// domain runs again. An image in use again (the domain restarted
// meanwhile) keeps its bitmap, which claims nothing: no checkpoint has its
// name.
func (b *Backup) dropStoppedBitmaps(ctx context.Context) {
	for _, c := range b.dec.Disks {
		d, ok := b.domainDisk(c.Name)
		if !ok || !d.CanCarryBitmap() || imageFormat(d) != "qcow2" {
			continue
		}
		bitmaps, err := imageInfo(ctx, b.images(), d.Source, "qcow2")
		if err != nil {
			continue
		}
		if _, ok := findBitmap(bitmaps, b.name); !ok {
			continue
		}
		if err := removeBitmap(ctx, b.images(), d.Source, b.name); err != nil {
			b.notes.Notef("note: the bitmap %s stays in %s (%v); it claims nothing: no checkpoint has its name", b.name, d.Source, err)
		}
	}
}

// pruneCheckpoints deletes the checkpoints of this folder's earlier
// backups: the next incremental builds on the newest alone (its bitmap
// records every change since it was made), while each checkpoint kept
// costs the running domain a bitmap to update on every write. The folder
// keeps their XML. Checkpoints vbackup did not make for this folder stay,
// whatever their names: another folder's chain builds on them.
func (b *Backup) pruneCheckpoints(ctx context.Context) {
	var gone []string
	for _, kept := range b.store.Backups {
		if kept.Name() == b.name {
			continue
		}
		if cp, err := b.dom.Checkpoint(ctx, kept.Name()); err != nil || notOwn(cp, kept) != "" {
			continue
		}
		if err := b.dom.DeleteCheckpoint(ctx, kept.Name(), virt.DeleteFlags{}); err != nil {
			b.notes.Notef("note: the checkpoint of the earlier backup %s was not deleted: %v", kept.Name(), err)
			continue
		}
		gone = append(gone, kept.Name())
	}
	if len(gone) > 0 {
		b.notes.Infof("Deleted from libvirt the checkpoint of the earlier backup %s: only the newest is built on (%s keeps its XML).",
			strings.Join(gone, ", "), b.req.Dir)
	}
}
