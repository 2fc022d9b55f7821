package virtfake

import (
	"vbackup/virt"
)

// How a job ends.
type ending int

const (
	endCompleted ending = iota // every disk copied (push), or a pull ended well
	endFailed                  // a disk's block job failed
	endAborted                 // AbortJob
	endStopped                 // the domain shut off under it
)

// canceled is QEMU's message for a block job that was cancelled.
const canceled = "Operation canceled"

// end finishes a job as qemuBackupJobTerminate does: the final statistics
// are kept for Job(completed), the stores libvirt made and no longer needs
// are gone, and Events subscribers hear of each disk and then of the job.
// Callers hold c.mu.
func (d *Domain) end(j *job, how ending, errmsg string) {
	if j.timer != nil {
		j.timer.Stop()
	}
	diskStatus := map[ending]string{endCompleted: "completed", endFailed: "failed", endAborted: "cancelled"}[how]
	var ended []*backupDisk
	for _, disk := range j.disks {
		if disk.state != "running" {
			continue
		}
		if how == endCompleted {
			disk.cur = disk.end
		}
		if how != endStopped {
			disk.state = diskStatus
			ended = append(ended, disk)
		}
	}
	stats := j.stats(virt.JobCompleted)
	stats.SuccessKnown = true
	switch how {
	case endCompleted:
		stats.Success = true
	case endFailed:
		stats.State, stats.Error = virt.JobFailed, errmsg
	case endAborted:
		stats.Error = canceled
		if j.pull() {
			stats.Success = true // libvirt: an aborted pull has completed
		} else {
			stats.State = virt.JobCancelled
		}
	case endStopped:
		stats.State = virt.JobCancelled
		stats.DataKnown, stats.DataTotal, stats.DataProcessed, stats.DataRemaining = false, 0, 0, 0
		stats.TempKnown, stats.TempUsed, stats.TempTotal = false, 0, 0
	}
	for _, disk := range j.disks {
		if disk.created && (j.pull() || how != endCompleted) {
			delete(d.c.stores, disk.path)
		}
	}
	d.completed = &stats
	d.job = nil
	close(j.done)

	for _, disk := range ended {
		d.emit(virt.Event{Kind: virt.EventDiskJobEnded, Disk: disk.name, Status: disk.state})
	}
	// The event carries what libvirtconn reads of libvirt's job-completed
	// event: success, message and, for a push, the byte counts.
	ev := virt.Job{State: virt.JobCompleted, Backup: true, SuccessKnown: true, Success: stats.Success, Error: stats.Error}
	if stats.DataKnown {
		ev.DataKnown, ev.DataTotal, ev.DataProcessed = true, stats.DataTotal, stats.DataProcessed
	}
	d.emit(virt.Event{Kind: virt.EventJobEnded, Job: ev})
}

// completePush ends push j as copied: the OnPushComplete hook runs for
// each disk (without the lock, so that it may call the fake), and a disk
// whose hook fails fails the job with the hook's message.
func (d *Domain) completePush(j *job) {
	d.c.mu.Lock()
	if d.job != j {
		d.c.mu.Unlock()
		return
	}
	hook := d.onPush
	type part struct{ disk, target string }
	var parts []part
	for _, disk := range j.disks {
		if disk.state == "running" {
			parts = append(parts, part{disk.name, disk.path})
		}
	}
	d.c.mu.Unlock()

	failed := map[string]string{}
	if hook != nil {
		for _, p := range parts {
			if err := hook(p.disk, p.target); err != nil {
				failed[p.disk] = err.Error()
			}
		}
	}

	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if d.job != j { // aborted or stopped meanwhile
		return
	}
	if len(failed) == 0 {
		d.end(j, endCompleted, "")
		return
	}
	first := ""
	for _, disk := range j.disks {
		if msg, ok := failed[disk.name]; ok {
			if first == "" {
				first = msg
			}
			disk.state = "failed"
			d.emit(virt.Event{Kind: virt.EventDiskJobEnded, Disk: disk.name, Status: "failed"})
		} else if disk.state == "running" {
			disk.cur, disk.state = disk.end, "completed"
			d.emit(virt.Event{Kind: virt.EventDiskJobEnded, Disk: disk.name, Status: "completed"})
		}
	}
	d.end(j, endFailed, first)
}

// HoldPush keeps push jobs started from now on (until HoldPush(false))
// running until EndJob or AbortJob ends them; a push not held ends by
// itself shortly after it starts.
func (d *Domain) HoldPush(hold bool) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	d.holdPush = hold
}

// EndJob ends the running job: with success, a push completes (its
// OnPushComplete hook runs) and a pull ends well; without, every disk
// still running fails and the job fails with errmsg. No job, no effect.
func (d *Domain) EndJob(success bool, errmsg string) {
	d.c.mu.Lock()
	j := d.job
	if j == nil {
		d.c.mu.Unlock()
		return
	}
	if success && !j.pull() {
		d.c.mu.Unlock()
		d.completePush(j)
		return
	}
	defer d.c.mu.Unlock()
	if success {
		d.end(j, endCompleted, "")
	} else {
		d.end(j, endFailed, errmsg)
	}
}

// SetProgress sets disk's block job progress in the running job (Cur and
// End of BlockJob, and the sums Job reports); it does not end the disk's
// copy. No job, or the disk not in it: no effect.
func (d *Domain) SetProgress(disk string, cur, end uint64) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if d.job == nil {
		return
	}
	for _, x := range d.job.disks {
		if x.name == disk && x.state == "running" {
			x.cur, x.end = cur, end
		}
	}
}

// OnPushComplete sets a hook called for each disk, with its target path,
// when a push completes (before the job reports its end), so that a test
// can make the target file; an error fails that disk, and so the job,
// with the error's message. nil removes the hook.
func (d *Domain) OnPushComplete(fn func(disk, target string) error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	d.onPush = fn
}
