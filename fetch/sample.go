package fetch

import (
	"context"
	"time"

	"vbackup/progress"
)

// sample reports every disk's progress to the printer until stopped.
func sample(ctx context.Context, jobs []*diskJob, opts Options) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(opts.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				opts.Printer.Update(snapshot(jobs, opts.Now(), opts.What))
			}
		}
	}()
	return func() { cancel(); <-done }
}

// snapshot is the sample of this moment; its mode says what is copied: a
// pull job's exports, or what (a restore).
func snapshot(jobs []*diskJob, at time.Time, what string) progress.Sample {
	mode := progress.ModePull
	if what != "" {
		mode = what
	}
	s := progress.Sample{At: at, Mode: mode}
	for _, j := range jobs {
		st, _ := j.state.Load().(progress.DiskState)
		if st == "" {
			st = progress.DiskRunning
		}
		d := progress.Disk{Name: j.disk.Name, Done: j.done.Load(), Total: j.total.Load(), State: st}
		s.Disks = append(s.Disks, d)
		s.Done += d.Done
		s.Total += d.Total
	}
	return s
}
