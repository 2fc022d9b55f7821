package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"vbackup/progress"
	"vbackup/virt"
)

// watchOptions qualify watchBackup.
type watchOptions struct {
	Printer  progress.Printer
	Timeout  time.Duration // 0: none
	Interval time.Duration // between samples; libvirt is asked at most 4 times a second
	Started  time.Time     // when watching began (kept across a reconnection); zero: now
	// KeepRecord leaves the job record of a completed push in place, for a
	// caller whose checkpoint is settled only once its own work is done.
	KeepRecord bool
	// Signals, when set, delivers Ctrl-C in place of env.Signals: for a
	// caller that handles signals itself around the watch.
	Signals <-chan os.Signal
}

// watcher follows one backup job until it ends. The numbers come from
// polling (job statistics, and each disk's block job); the end and its
// outcome come from libvirt's events, so a job that ends between two polls
// is never missed, with polling as the fallback.
type watcher struct {
	env     *Env
	dom     virt.Domain
	opts    watchOptions
	b       runningBackup
	disks   []progress.Disk
	started time.Time
}

// errWatchFailed marks a job that ended without completing; the printer
// has already said why.
var errWatchFailed = errors.New("the backup job did not complete")

// watchBackup shows the domain's running backup job until it ends and
// returns nil only when it completed (a pull: when it was ended normally).
func watchBackup(ctx context.Context, env *Env, dom virt.Domain, opts watchOptions) error {
	if opts.Interval < 250*time.Millisecond {
		opts.Interval = 250 * time.Millisecond
	}
	if opts.Started.IsZero() {
		opts.Started = env.Now()
	}
	w := &watcher{env: env, dom: dom, opts: opts, started: opts.Started}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := dom.Events(ctx)
	if err != nil {
		return fmt.Errorf("domain %q: listening for job events: %w", dom.Name(), err)
	}
	b, ok, err := currentBackup(ctx, dom)
	if err != nil {
		return err
	}
	if !ok {
		return w.finish(ctx, nil)
	}
	w.b = b
	for _, d := range jobDisks(b.def) {
		st := progress.DiskState("running")
		if b.pull() {
			st = "exporting"
		}
		w.disks = append(w.disks, progress.Disk{Name: d.Name, State: st})
	}
	sigs := opts.Signals
	if sigs == nil {
		var stopSigs func()
		sigs, stopSigs = env.Signals()
		defer stopSigs()
	}
	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	if ended, err := w.sample(ctx); err != nil || ended {
		return w.endOrErr(ctx, err)
	}
	for {
		select {
		case ev, open := <-events:
			if !open {
				return w.finish(ctx, nil)
			}
			switch ev.Kind {
			case virt.EventJobEnded:
				return w.finish(ctx, &ev.Job)
			case virt.EventDiskJobEnded:
				w.diskEnded(ev.Disk, ev.Status)
			case virt.EventDisconnected:
				cancel()
				return w.reconnect(context.WithoutCancel(ctx))
			}
		case <-tick.C:
			if ended, err := w.sample(ctx); err != nil || ended {
				return w.endOrErr(ctx, err)
			}
		case <-timeout:
			return w.stop(ctx, fmt.Sprintf("timed out after %s", opts.Timeout))
		case <-sigs:
			go func() {
				<-sigs
				fmt.Fprintf(env.Stderr, "\nInterrupted again: leaving now. The job may still be running (see 'vbackup backup-status %s')%s.\n",
					w.dom.Name(), w.leftCheckpoint())
				env.Exit(ExitFailure)
			}()
			return w.stop(ctx, "interrupted")
		}
	}
}

func (w *watcher) leftCheckpoint() string {
	if w.b.hasRec && w.b.rec.Checkpoint != "" {
		return fmt.Sprintf("; checkpoint %s is marked for deletion: 'vbackup backup-end %s' ends the job, if it still runs, and deletes it", w.b.rec.Checkpoint, w.dom.Name())
	}
	return ""
}

func (w *watcher) endOrErr(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	return w.finish(ctx, nil)
}

// sample asks libvirt for the numbers once and hands them to the printer;
// it reports whether the job has ended.
func (w *watcher) sample(ctx context.Context) (bool, error) {
	job, err := w.dom.Job(ctx, false)
	if err != nil {
		return false, fmt.Errorf("domain %q: reading its job: %w", w.dom.Name(), err)
	}
	if job.State != virt.JobRunning {
		return true, nil
	}
	if !w.b.pull() {
		for i := range w.disks {
			d := &w.disks[i]
			if d.State != "running" {
				continue
			}
			bj, ok, err := w.dom.BlockJob(ctx, d.Name)
			switch {
			case err != nil:
				return false, fmt.Errorf("domain %q, disk %s: %w", w.dom.Name(), d.Name, err)
			case ok && bj.Backup:
				d.Done, d.Total = bj.Cur, bj.End
			case !ok:
				// The disk's part ended between two polls; its event says how.
			}
		}
	}
	s := progress.Sample{At: w.env.Now(), Mode: "push", Disks: append([]progress.Disk(nil), w.disks...)}
	if w.b.pull() {
		s.Mode = "pull"
	}
	s.Done, s.Total = job.DataProcessed, job.DataTotal
	s.TempUsed, s.TempTotal = job.TempUsed, job.TempTotal
	// libvirt's job-wide numbers trail the disks' own; once every disk's
	// total is known, their sum keeps the job line in step with the disks.
	if done, total, ok := sumDisks(w.disks); ok && !w.b.pull() {
		s.Done, s.Total = done, total
	}
	w.opts.Printer.Update(s)
	return false, nil
}

func (w *watcher) diskEnded(disk, status string) {
	for i := range w.disks {
		d := &w.disks[i]
		if d.Name != disk {
			continue
		}
		switch status {
		case "completed":
			d.State = "done"
			if d.Total > 0 {
				d.Done = d.Total
			}
		case "failed":
			d.State = "failed"
		case "cancelled":
			d.State = "cancelled"
		}
	}
	w.opts.Printer.Update(progress.Sample{At: w.env.Now(), Mode: w.mode(), Disks: append([]progress.Disk(nil), w.disks...)})
}

func (w *watcher) mode() string {
	if w.b.pull() {
		return "pull"
	}
	return "push"
}

// finish reads how the job ended (from its event when there was one, else
// from the completed statistics, which are kept for other readers), settles
// its checkpoint, and prints the result.
func (w *watcher) finish(ctx context.Context, ended *virt.Job) error {
	done, err := w.dom.Job(ctx, true)
	if err == nil && ended != nil {
		if ended.SuccessKnown {
			done.SuccessKnown, done.Success = true, ended.Success
		}
		if ended.Error != "" {
			done.Error = ended.Error
		}
	}
	res := progress.Result{At: w.env.Now(), Elapsed: w.env.Now().Sub(w.started), Bytes: done.DataProcessed}
	completed := err == nil && done.State == virt.JobCompleted && (!done.SuccessKnown || done.Success)
	switch {
	case w.b.pull():
		// A pull ends when it is aborted: that is its normal end.
		res.State = "completed"
	case completed:
		res.State = "completed"
	case err != nil:
		res.State, res.Error = "unknown", err.Error()
	default:
		res.State, res.Error = "failed", done.Error
		if done.State == virt.JobCancelled || done.Error == "Operation canceled" {
			res.State = "cancelled"
		}
	}
	for i := range w.disks {
		if d := &w.disks[i]; d.State == "running" || d.State == "exporting" {
			if res.State == "completed" {
				d.State = "done"
				if d.Total > 0 {
					d.Done = d.Total
				}
			} else {
				d.State = progress.DiskState(res.State)
			}
		}
	}
	w.opts.Printer.Update(progress.Sample{At: res.At, Mode: w.mode(), Disks: append([]progress.Disk(nil), w.disks...), Done: done.DataProcessed, Total: done.DataTotal})
	w.opts.Printer.Finish(res)
	if w.b.pull() {
		removeSocketDir(w.env, w.dom.Name())
	}
	if res.State == "completed" {
		if w.b.hasRec && !w.b.pull() && !w.opts.KeepRecord {
			_ = w.dom.ClearBackupRecord(ctx)
		}
		return nil
	}
	if res.State != "unknown" {
		if err := settle(ctx, w.env, w.dom); err != nil {
			return err
		}
	}
	return fmt.Errorf("domain %q: the backup job %s: %s", w.dom.Name(), res.State, res.Error)
}

// stop ends the job because the user (Ctrl-C) or --timeout asked, and
// deletes its checkpoint as backup-end would.
func (w *watcher) stop(ctx context.Context, why string) error {
	fmt.Fprintf(w.env.Stderr, "\n%s: ending the backup job of domain %s...\n", why, w.dom.Name())
	if w.b.hasRec {
		// Recorded first: if vbackup is stopped before it deletes the
		// checkpoint, the next vbackup command deletes it.
		rec := w.b.rec
		rec.Discard = true
		_ = w.dom.SetBackupRecord(ctx, rec)
	}
	if err := w.dom.AbortJob(ctx); err != nil {
		return fmt.Errorf("domain %q: %s, and ending its job failed: %w; end it with 'vbackup backup-end %s'", w.dom.Name(), why, err, w.dom.Name())
	}
	if err := waitJobEnd(ctx, w.dom, 60*time.Second); err != nil {
		return err
	}
	w.opts.Printer.Finish(progress.Result{At: w.env.Now(), State: "cancelled", Error: why, Elapsed: w.env.Now().Sub(w.started)})
	if w.b.pull() {
		removeSocketDir(w.env, w.dom.Name())
	}
	if w.b.hasRec {
		if err := discardCheckpoint(ctx, w.env, w.dom, w.b.rec.Checkpoint); err != nil {
			return err
		}
		_ = w.dom.ClearBackupRecord(ctx)
	}
	return fmt.Errorf("domain %q: the backup job was ended: %s", w.dom.Name(), why)
}

// reconnect follows the job on a new connection after libvirtd went away:
// if the job still runs, watching goes on; otherwise its outcome may be
// unknown, and the user is told how to find out.
func (w *watcher) reconnect(ctx context.Context) error {
	fmt.Fprintf(w.env.Stderr, "\nThe connection to libvirtd was lost; reconnecting...\n")
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := w.env.Reconnect(ctx)
		if err == nil {
			dom, derr := conn.Domain(ctx, w.dom.Name())
			if derr == nil {
				w.dom = dom
				if _, ok, jerr := currentBackup(ctx, dom); jerr == nil && ok {
					fmt.Fprintf(w.env.Stderr, "Reconnected; the job still runs.\n")
					opts := w.opts
					opts.Started = w.started
					return watchBackup(ctx, w.env, dom, opts)
				}
				if done, jerr := dom.Job(ctx, true); jerr == nil && done.State != virt.JobNone {
					return w.finish(ctx, nil)
				}
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	w.opts.Printer.Finish(progress.Result{At: w.env.Now(), State: "unknown", Error: "the connection to libvirtd was lost", Elapsed: w.env.Now().Sub(w.started)})
	return fmt.Errorf("domain %q: the connection to libvirtd was lost and the job's outcome is unknown; check with 'vbackup backup-status %s --completed' and 'vbackup checkpoint-list %s'",
		w.dom.Name(), w.dom.Name(), w.dom.Name())
}

func sumDisks(disks []progress.Disk) (done, total uint64, ok bool) {
	for _, d := range disks {
		if d.Total == 0 {
			return 0, 0, false
		}
		done, total = done+d.Done, total+d.Total
	}
	return done, total, len(disks) > 0
}
