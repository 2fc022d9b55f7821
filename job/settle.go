package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/virt"
)

// Settle deals with a record vbackup left of a job that is no longer
// running: when the job did not complete, the checkpoint created with it
// would claim data that was never saved, so it is deleted (its bitmap
// merges into its parent's, which keeps every change for the next
// incremental). It says through notes what it did.
func Settle(ctx context.Context, dom virt.Domain, notes progress.Notifier) error {
	rec, ok, err := dom.BackupRecord(ctx)
	if err != nil || !ok {
		return err
	}
	if rec.Freezing && orphaned(rec) {
		if err := thawLeft(ctx, dom, &rec, notes); err != nil {
			return err
		}
	}
	stats, err := dom.Job(ctx, false)
	if err != nil {
		return err
	}
	if stats.State == virt.JobRunning {
		if !orphaned(rec) {
			return nil
		}
		// 'vbackup backup' died while reading the job: nobody will finish it.
		notes.Notef("note: the backup into %s started %s lost its vbackup process (pid %d); ending its job",
			rec.Dir, when(rec.Started), rec.PID)
		rec.Discard = true
		if err := dom.SetBackupRecord(ctx, rec); err != nil {
			return err
		}
		if err := End(ctx, dom); err != nil {
			return err
		}
	}
	done, err := dom.Job(ctx, true)
	if err != nil {
		return err
	}
	if rec.Dir != "" {
		// A checkpoint of 'vbackup backup' holds data only once a manifest
		// in its folder says so; until then its process may still be at
		// work (checksumming, committing), and only its death settles it.
		done, known := committed(rec.Dir, rec.Checkpoint)
		switch {
		case done:
		case !known || !orphaned(rec):
			return nil
		default:
			notes.Notef("note: the backup into %s started %s did not finish", rec.Dir, when(rec.Started))
			if err := Discard(ctx, dom, rec.Checkpoint, notes); err != nil {
				return err
			}
		}
		return dom.ClearBackupRecord(ctx)
	}
	switch {
	case rec.Discard:
		// vbackup was ending this job unfinished when it was interrupted.
		notes.Notef("note: the backup job started %s was being ended before it finished", when(rec.Started))
		if err := Discard(ctx, dom, rec.Checkpoint, notes); err != nil {
			return err
		}
	case rec.Pull && done.State != virt.JobFailed:
		// A pull ends by being aborted; whether its reader finished, only
		// the one who ended it knows.
		if rec.Checkpoint != "" {
			notes.Notef("note: the pull backup job started %s was ended outside vbackup; checkpoint %s is kept: "+
				"if its exports were not all read, delete it with 'vbackup checkpoint-delete %s %s'",
				when(rec.Started), rec.Checkpoint, dom.Name(), rec.Checkpoint)
		}
	case Failed(done):
		why := done.Error
		if why == "" {
			why = string(done.State)
		}
		notes.Notef("note: the backup job started %s did not complete (%s)", when(rec.Started), why)
		if err := Discard(ctx, dom, rec.Checkpoint, notes); err != nil {
			return err
		}
	case done.State == virt.JobCompleted && done.Backup:
		// The push finished by itself: its checkpoint holds what it claims.
	case rec.Checkpoint != "":
		notes.Notef("note: how the backup job started %s ended is unknown (libvirtd restarted?); checkpoint %s is kept: "+
			"if the backup is not complete, delete it with 'vbackup checkpoint-delete %s %s'",
			when(rec.Started), rec.Checkpoint, dom.Name(), rec.Checkpoint)
	}
	return dom.ClearBackupRecord(ctx)
}

// Failed reports a finished job's statistics as those of a job that did
// not complete. libvirt reports a cancelled push as completed with an
// error.
func Failed(done virt.Job) bool {
	return done.State == virt.JobFailed || done.State == virt.JobCancelled || (done.SuccessKnown && !done.Success)
}

func when(t time.Time) string { return t.Local().Format(time.DateTime) }

// Ready makes sure a new job can start on dom: what an earlier job left is
// settled, no job runs, and no 'vbackup backup' is still finishing.
func Ready(ctx context.Context, dom virt.Domain, notes progress.Notifier) error {
	// Settling first: it ends a job whose 'vbackup backup' process died.
	if err := Settle(ctx, dom, notes); err != nil {
		if errors.Is(err, virt.ErrUnsupported) {
			return NoJobsError(dom, err)
		}
		return err
	}
	stats, err := dom.Job(ctx, false)
	if errors.Is(err, virt.ErrUnsupported) {
		return NoJobsError(dom, err)
	}
	if err != nil {
		return fmt.Errorf("domain %q: %w", dom.Name(), err)
	}
	if stats.State == virt.JobRunning {
		return fmt.Errorf("domain %q already has a job running, and libvirt runs one at a time; wait for it, or end it (for a backup: 'vbackup backup-end %s')", dom.Name(), dom.Name())
	}
	return busy(ctx, dom)
}

// orphaned reports a job read by a 'vbackup backup' process of this host
// that no longer runs.
// thawLeft thaws the guest's filesystems that a vbackup killed while they
// were frozen left so: nothing else would, and the guest's writes hang.
func thawLeft(ctx context.Context, dom virt.Domain, rec *virt.BackupRecord, notes progress.Notifier) error {
	if err := dom.ThawFS(ctx); err != nil {
		return fmt.Errorf("domain %q: vbackup (pid %d) died while the guest's filesystems were frozen, and thawing them failed: %w; run 'virsh domfsthaw %s'",
			dom.Name(), rec.PID, err, dom.Name())
	}
	notes.Notef("note: vbackup (pid %d) died while the filesystems of %s were frozen for the backup into %s; thawed them",
		rec.PID, dom.Name(), rec.Dir)
	rec.Freezing = false
	return dom.SetBackupRecord(ctx, *rec)
}

func orphaned(rec virt.BackupRecord) bool {
	if rec.Dir == "" || rec.PID <= 0 {
		return false
	}
	if host, err := os.Hostname(); err != nil || host != rec.Host {
		return false // another host's process: its state is not known here
	}
	err := syscall.Kill(rec.PID, 0)
	return errors.Is(err, syscall.ESRCH)
}

// committed reports whether the backup folder dir holds the backup of
// checkpoint name; known is false when that cannot be told (the folder is
// unreadable, or gone with its file system).
func committed(dir, name string) (done, known bool) {
	_, err := os.Stat(filepath.Join(dir, name, chain.ManifestFile))
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, os.ErrNotExist):
		if _, derr := os.Stat(dir); derr != nil {
			return false, false // the whole folder is missing: unmounted?
		}
		return false, true
	}
	return false, false
}

// busy is the error for a domain whose last 'vbackup backup' is still
// finishing (its job has ended, its manifest is not written yet).
func busy(ctx context.Context, dom virt.Domain) error {
	rec, ok, err := dom.BackupRecord(ctx)
	if err != nil || !ok || rec.Dir == "" {
		return err
	}
	return fmt.Errorf("domain %q: 'vbackup backup' (pid %d on %s) into %s, started %s, is still finishing; wait for it",
		dom.Name(), rec.PID, rec.Host, rec.Dir, when(rec.Started))
}

// Discard deletes the checkpoint created with a job that did not deliver
// its data, and says so.
func Discard(ctx context.Context, dom virt.Domain, name string, notes progress.Notifier) error {
	if name == "" {
		return nil
	}
	err := dom.DeleteCheckpoint(ctx, name, virt.DeleteFlags{})
	if errors.Is(err, virt.ErrNoCheckpoint) {
		return nil
	}
	if st, serr := dom.State(ctx); err != nil && serr == nil && !st.Active {
		// The domain stopped meanwhile, and libvirt deletes a checkpoint's
		// bitmaps only from a running one ("cannot delete checkpoint for
		// inactive domain"): its metadata goes, so that it claims nothing.
		err = dom.DeleteCheckpoint(ctx, name, virt.DeleteFlags{MetadataOnly: true})
	}
	if err != nil {
		return fmt.Errorf("domain %q: deleting checkpoint %q, which claims data the job did not save: %w; delete it with 'vbackup checkpoint-delete %s %s'",
			dom.Name(), name, err, dom.Name(), name)
	}
	notes.Notef("Checkpoint %s deleted: it would have claimed data that was not saved.", name)
	return nil
}

// endLimit is how long a job may take to wind down after it was aborted.
const endLimit = 60 * time.Second

// End aborts the domain's running job and waits until it has ended.
func End(ctx context.Context, dom virt.Domain) error {
	if err := dom.AbortJob(ctx); err != nil {
		return fmt.Errorf("domain %q: ending the backup job: %w", dom.Name(), err)
	}
	return waitEnd(ctx, dom)
}

// waitEnd polls until the domain's job has ended: AbortJob returns once
// QEMU has been asked, and the job winds down after.
func waitEnd(ctx context.Context, dom virt.Domain) error {
	deadline := time.Now().Add(endLimit)
	for {
		stats, err := dom.Job(ctx, false)
		if err != nil {
			return err
		}
		if stats.State != virt.JobRunning {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("domain %q: the job is still running %s after it was asked to end", dom.Name(), endLimit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
