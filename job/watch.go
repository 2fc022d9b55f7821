package job

import (
	"context"
	"fmt"
	"time"

	"vbackup/progress"
	"vbackup/virt"
)

// WatchOptions qualify Watch.
type WatchOptions struct {
	Printer  progress.Printer
	Notes    progress.Notifier
	Timeout  time.Duration // 0: none
	Interval time.Duration // between samples; libvirt is asked at most 4 times a second
	Now      func() time.Time
	// KeepRecord leaves the job record of a completed push in place, for a
	// caller whose checkpoint is settled only once its own work is done.
	KeepRecord bool
	// Reconnect opens the connection again after libvirtd went away; nil:
	// the job's outcome is then unknown.
	Reconnect func(ctx context.Context) (virt.Conn, error)
	Sockets   Sockets // where a pull job's socket folder is removed from

	started time.Time // kept across a reconnection
}

// Watch shows the domain's running backup job until it ends and returns
// nil only when it completed (a pull: when it was ended normally). The
// numbers come from polling (job statistics, and each disk's block job);
// the end and its outcome come from libvirt's events, so a job that ends
// between two polls is never missed, with polling as the fallback. When
// ctx ends first, the job is stopped and its checkpoint discarded, and the
// error wraps ctx's cause.
func Watch(ctx context.Context, dom virt.Domain, opts WatchOptions) error {
	if opts.Interval < 250*time.Millisecond {
		opts.Interval = 250 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Printer == nil {
		opts.Printer = progress.NewQuiet()
	}
	if opts.Notes == nil {
		opts.Notes = progress.NewNotifier(nil, nil)
	}
	if opts.started.IsZero() {
		opts.started = opts.Now()
	}
	// libvirt is asked under a context of its own: ending ctx stops the
	// job, which takes calls of its own.
	lv, stopEvents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEvents()
	w := &watcher{dom: dom, opts: opts}
	events, err := dom.Events(lv)
	if err != nil {
		return fmt.Errorf("domain %q: listening for job events: %w", dom.Name(), err)
	}
	j, ok, err := Current(lv, dom)
	if err != nil {
		return err
	}
	if !ok {
		return w.finish(lv, nil)
	}
	w.job = j
	for _, d := range j.Disks {
		st := progress.DiskRunning
		if j.Pull {
			st = progress.DiskExporting
		}
		w.disks = append(w.disks, progress.Disk{Name: d.Name, State: st})
	}
	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case ev, open := <-events:
				if !open {
					return w.finish(lv, nil)
				}
				switch ev.Kind {
				case virt.EventJobEnded:
					return w.finish(lv, &ev.Job)
				case virt.EventDiskJobEnded:
					w.diskEnded(ev.Disk, ev.Status)
				case virt.EventDisconnected:
					stopEvents()
					return w.reconnect(context.WithoutCancel(ctx), ctx)
				}
				continue
			case <-tick.C:
			case <-timeout:
				return w.stop(lv, fmt.Errorf("timed out after %s", opts.Timeout))
			case <-ctx.Done():
				return w.stop(lv, context.Cause(ctx))
			}
		}
		if ended, err := w.sample(lv); err != nil {
			return err
		} else if ended {
			return w.finish(lv, nil)
		}
	}
}

// watcher follows one backup job until it ends.
type watcher struct {
	dom   virt.Domain
	opts  WatchOptions
	job   *Job
	disks []progress.Disk
}

func (w *watcher) pull() bool { return w.job != nil && w.job.Pull }

func (w *watcher) mode() string {
	if w.pull() {
		return progress.ModePull
	}
	return progress.ModePush
}

func (w *watcher) elapsed() time.Duration { return w.opts.Now().Sub(w.opts.started) }

// sample asks libvirt for the numbers once and hands them to the printer;
// it reports whether the job has ended.
func (w *watcher) sample(ctx context.Context) (bool, error) {
	stats, err := w.dom.Job(ctx, false)
	if err != nil {
		return false, fmt.Errorf("domain %q: reading its job: %w", w.dom.Name(), err)
	}
	if stats.State != virt.JobRunning {
		return true, nil
	}
	if !w.pull() {
		for i := range w.disks {
			d := &w.disks[i]
			if d.State != progress.DiskRunning {
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
	s := progress.Sample{At: w.opts.Now(), Mode: w.mode(), Disks: append([]progress.Disk(nil), w.disks...)}
	s.Done, s.Total = stats.DataProcessed, stats.DataTotal
	s.TempUsed, s.TempTotal = stats.TempUsed, stats.TempTotal
	// libvirt's job-wide numbers trail the disks' own; once every disk's
	// total is known, their sum keeps the job line in step with the disks.
	if done, total, ok := sumDisks(w.disks); ok && !w.pull() {
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
			d.State = progress.DiskDone
			if d.Total > 0 {
				d.Done = d.Total
			}
		case "failed":
			d.State = progress.DiskFailed
		case "cancelled":
			d.State = progress.DiskCancelled
		}
	}
	w.opts.Printer.Update(progress.Sample{At: w.opts.Now(), Mode: w.mode(), Disks: append([]progress.Disk(nil), w.disks...)})
}

// Outcome maps how a job ended to the result a user is shown: done is the
// completed job's statistics (err when they could not be read), ended the
// event's, when one came.
func Outcome(pull bool, done virt.Job, err error, ended *virt.Job) progress.Result {
	if err == nil && ended != nil {
		if ended.SuccessKnown {
			done.SuccessKnown, done.Success = true, ended.Success
		}
		if ended.Error != "" {
			done.Error = ended.Error
		}
	}
	res := progress.Result{Bytes: done.DataProcessed}
	switch {
	case pull:
		// A pull ends when it is aborted: that is its normal end.
		res.State = progress.JobCompleted
	case err == nil && done.State == virt.JobCompleted && (!done.SuccessKnown || done.Success):
		res.State = progress.JobCompleted
	case err != nil:
		res.State, res.Error = progress.JobUnknown, err.Error()
	default:
		res.State, res.Error = progress.JobFailed, done.Error
		if done.State == virt.JobCancelled || done.Error == "Operation canceled" {
			res.State = progress.JobCancelled
		}
	}
	return res
}

// finish reads how the job ended (from its event when there was one, else
// from the completed statistics, which are kept for other readers), settles
// its checkpoint, and prints the result.
func (w *watcher) finish(ctx context.Context, ended *virt.Job) error {
	done, err := w.dom.Job(ctx, true)
	res := Outcome(w.pull(), done, err, ended)
	res.At, res.Elapsed = w.opts.Now(), w.elapsed()
	for i := range w.disks {
		if d := &w.disks[i]; !d.State.Final() {
			if res.State == progress.JobCompleted {
				d.State = progress.DiskDone
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
	if w.pull() {
		w.opts.Sockets.Remove(w.dom.Name())
	}
	if res.State == progress.JobCompleted {
		if w.job != nil && w.job.HasRecord && !w.pull() && !w.opts.KeepRecord {
			_ = w.dom.ClearBackupRecord(ctx)
		}
		return nil
	}
	if res.State != progress.JobUnknown {
		if err := Settle(ctx, w.dom, w.opts.Notes); err != nil {
			return err
		}
	}
	return fmt.Errorf("domain %q: the backup job %s: %s", w.dom.Name(), res.State, res.Error)
}

// stop ends the job because the caller (Ctrl-C) or the timeout asked, and
// deletes its checkpoint as backup-end would.
func (w *watcher) stop(ctx context.Context, why error) error {
	w.opts.Notes.Notef("\n%v: ending the backup job of domain %s...", why, w.dom.Name())
	if w.job.HasRecord {
		// Recorded first: if vbackup is stopped before it deletes the
		// checkpoint, the next vbackup command deletes it.
		rec := w.job.Record
		rec.Discard = true
		_ = w.dom.SetBackupRecord(ctx, rec)
	}
	if err := End(ctx, w.dom); err != nil {
		return fmt.Errorf("domain %q: %v, and ending its job failed: %w; end it with 'vbackup backup-end %s'", w.dom.Name(), why, err, w.dom.Name())
	}
	w.opts.Printer.Finish(progress.Result{At: w.opts.Now(), State: progress.JobCancelled, Error: why.Error(), Elapsed: w.elapsed()})
	if w.pull() {
		w.opts.Sockets.Remove(w.dom.Name())
	}
	if w.job.HasRecord {
		if err := Discard(ctx, w.dom, w.job.Record.Checkpoint, w.opts.Notes); err != nil {
			return err
		}
		_ = w.dom.ClearBackupRecord(ctx)
	}
	return fmt.Errorf("domain %q: the backup job was ended: %w", w.dom.Name(), why)
}

// reconnect follows the job on a new connection after libvirtd went away:
// if the job still runs, watching goes on (until outer ends); otherwise its
// outcome may be unknown, and the user is told how to find out.
func (w *watcher) reconnect(ctx, outer context.Context) error {
	w.opts.Notes.Notef("\nThe connection to libvirtd was lost; reconnecting...")
	// A connection that opens itself again (virt.Redialer) has waited for
	// libvirtd by the time a call on the same handle returns: the job is
	// looked at there, and watched again with events of the new connection.
	if _, ok, err := Current(ctx, w.dom); err == nil {
		if ok {
			w.opts.Notes.Notef("Reconnected; the job still runs.")
			return Watch(outer, w.dom, w.opts)
		}
		return w.finish(ctx, nil)
	}
	deadline := time.Now().Add(30 * time.Second)
	for w.opts.Reconnect != nil {
		conn, err := w.opts.Reconnect(ctx)
		if err == nil {
			dom, derr := conn.Domain(ctx, w.dom.Name())
			if derr == nil {
				w.dom = dom
				if _, ok, jerr := Current(ctx, dom); jerr == nil && ok {
					w.opts.Notes.Notef("Reconnected; the job still runs.")
					return Watch(outer, dom, w.opts)
				}
				if done, jerr := dom.Job(ctx, true); jerr == nil && done.State != virt.JobNone {
					return w.finish(ctx, nil)
				}
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-outer.Done():
			// Stopped while libvirtd is away: nothing can end the job from here.
			w.opts.Printer.Finish(progress.Result{At: w.opts.Now(), State: progress.JobUnknown, Error: "the connection to libvirtd was lost", Elapsed: w.elapsed()})
			return fmt.Errorf("domain %q: the connection to libvirtd was lost, and vbackup was stopped before it came back (%w); check the job with 'vbackup backup-status %s'",
				w.dom.Name(), context.Cause(outer), w.dom.Name())
		case <-time.After(time.Second):
		}
	}
	w.opts.Printer.Finish(progress.Result{At: w.opts.Now(), State: progress.JobUnknown, Error: "the connection to libvirtd was lost", Elapsed: w.elapsed()})
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
