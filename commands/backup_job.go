package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/virt"
)

// runningBackup is the backup job running on a domain, as libvirt reports
// it, with vbackup's record of it when vbackup started it.
type runningBackup struct {
	job    virt.Job
	def    libvirtxml.DomainBackup
	rec    virt.BackupRecord
	hasRec bool
}

func (b runningBackup) pull() bool {
	return b.def.Pull != nil
}

// currentBackup returns the backup job running on dom; ok is false when
// none runs.
func currentBackup(ctx context.Context, dom virt.Domain) (b runningBackup, ok bool, err error) {
	if b.job, err = dom.Job(ctx, false); err != nil {
		if errors.Is(err, virt.ErrUnsupported) {
			return b, false, noBackupJobs(dom, err)
		}
		return b, false, fmt.Errorf("domain %q: reading its job: %w", dom.Name(), err)
	}
	if b.job.State != virt.JobRunning || !b.job.Backup {
		return b, false, nil
	}
	doc, err := dom.BackupXML(ctx)
	if err != nil {
		// A push can end between the two calls.
		if again, jerr := dom.Job(ctx, false); jerr == nil && again.State != virt.JobRunning {
			b.job = again
			return b, false, nil
		}
		return b, false, fmt.Errorf("domain %q: reading its backup job: %w", dom.Name(), err)
	}
	if err := b.def.Unmarshal(doc); err != nil {
		return b, false, fmt.Errorf("domain %q: the backup job's XML: %w", dom.Name(), err)
	}
	if b.rec, b.hasRec, err = dom.BackupRecord(ctx); err != nil {
		return b, false, fmt.Errorf("domain %q: reading vbackup's record of the job: %w", dom.Name(), err)
	}
	return b, true, nil
}

// settle deals with a record vbackup left of a job that is no longer
// running: when the job did not complete, the checkpoint created with it
// would claim data that was never saved, so it is deleted (its bitmap
// merges into its parent's, which keeps every change for the next
// incremental). It says on stderr what it did.
func settle(ctx context.Context, env *Env, dom virt.Domain) error {
	rec, ok, err := dom.BackupRecord(ctx)
	if err != nil || !ok {
		return err
	}
	job, err := dom.Job(ctx, false)
	if err != nil {
		return err
	}
	if job.State == virt.JobRunning {
		if !orphaned(rec) {
			return nil
		}
		// 'vbackup backup' died while reading the job: nobody will finish it.
		fmt.Fprintf(env.Stderr, "note: the backup into %s started %s lost its vbackup process (pid %d); ending its job\n",
			rec.Dir, rec.Started.Local().Format(time.DateTime), rec.PID)
		rec.Discard = true
		if err := dom.SetBackupRecord(ctx, rec); err != nil {
			return err
		}
		if err := dom.AbortJob(ctx); err != nil {
			return fmt.Errorf("domain %q: ending the job: %w", dom.Name(), err)
		}
		if err := waitJobEnd(ctx, dom, 60*time.Second); err != nil {
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
			fmt.Fprintf(env.Stderr, "note: the backup into %s started %s did not finish\n", rec.Dir, rec.Started.Local().Format(time.DateTime))
			if err := discardCheckpoint(ctx, env, dom, rec.Checkpoint); err != nil {
				return err
			}
		}
		return dom.ClearBackupRecord(ctx)
	}
	switch {
	case rec.Discard:
		// vbackup was ending this job unfinished when it was interrupted.
		fmt.Fprintf(env.Stderr, "note: the backup job started %s was being ended before it finished\n", rec.Started.Local().Format(time.DateTime))
		if err := discardCheckpoint(ctx, env, dom, rec.Checkpoint); err != nil {
			return err
		}
	case rec.Pull && done.State != virt.JobFailed:
		// A pull ends by being aborted; whether its reader finished, only
		// the one who ended it knows.
		if rec.Checkpoint != "" {
			fmt.Fprintf(env.Stderr, "note: the pull backup job started %s was ended outside vbackup; checkpoint %s is kept: "+
				"if its exports were not all read, delete it with 'vbackup checkpoint-delete %s %s'\n",
				rec.Started.Local().Format(time.DateTime), rec.Checkpoint, dom.Name(), rec.Checkpoint)
		}
	case done.State == virt.JobFailed || done.State == virt.JobCancelled || (done.SuccessKnown && !done.Success):
		// libvirt reports a cancelled push as completed with an error.
		why := done.Error
		if why == "" {
			why = string(done.State)
		}
		fmt.Fprintf(env.Stderr, "note: the backup job started %s did not complete (%s)\n", rec.Started.Local().Format(time.DateTime), why)
		if err := discardCheckpoint(ctx, env, dom, rec.Checkpoint); err != nil {
			return err
		}
	case done.State == virt.JobCompleted && done.Backup:
		// The push finished by itself: its checkpoint holds what it claims.
	case rec.Checkpoint != "":
		fmt.Fprintf(env.Stderr, "note: how the backup job started %s ended is unknown (libvirtd restarted?); checkpoint %s is kept: "+
			"if the backup is not complete, delete it with 'vbackup checkpoint-delete %s %s'\n",
			rec.Started.Local().Format(time.DateTime), rec.Checkpoint, dom.Name(), rec.Checkpoint)
	}
	return dom.ClearBackupRecord(ctx)
}

// orphaned reports a job read by a 'vbackup backup' process of this host
// that no longer runs.
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

// busyBackup is the error for a domain whose last 'vbackup backup' is
// still finishing (its job has ended, its manifest is not written yet).
func busyBackup(ctx context.Context, dom virt.Domain) error {
	rec, ok, err := dom.BackupRecord(ctx)
	if err != nil || !ok || rec.Dir == "" {
		return err
	}
	return fmt.Errorf("domain %q: 'vbackup backup' (pid %d on %s) into %s, started %s, is still finishing; wait for it",
		dom.Name(), rec.PID, rec.Host, rec.Dir, rec.Started.Local().Format(time.DateTime))
}

// discardCheckpoint deletes the checkpoint created with a job that did not
// deliver its data, and says so.
func discardCheckpoint(ctx context.Context, env *Env, dom virt.Domain, name string) error {
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
	fmt.Fprintf(env.Stderr, "Checkpoint %s deleted: it would have claimed data that was not saved.\n", name)
	return nil
}

// waitJobEnd polls until the domain's job has ended, after an abort.
func waitJobEnd(ctx context.Context, dom virt.Domain, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		job, err := dom.Job(ctx, false)
		if err != nil {
			return err
		}
		if job.State != virt.JobRunning {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("domain %q: the job is still running %s after it was asked to end", dom.Name(), limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// noBackupJobs is the error for a driver that runs no backup jobs
// (libvirt's test driver, say).
func noBackupJobs(dom virt.Domain, err error) error {
	return fmt.Errorf("domain %q: this libvirt driver cannot run backup jobs (%w); vbackup needs the QEMU driver (qemu:///system or qemu:///session)", dom.Name(), err)
}

// noBackupJob is the error for a command that needs a running backup job.
func noBackupJob(dom virt.Domain) error {
	return fmt.Errorf("domain %q has no backup job running; start one with 'vbackup backup-begin %s'", dom.Name(), dom.Name())
}
