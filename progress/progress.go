// Package progress shows how a running backup job advances: per disk its
// bytes, percent, rate and ETA, then its final state, and a job line with
// the totals. The backup code reports through Printer and never sees how it
// is drawn; this package alone knows the progress-bar library.
//
// Printers never read the clock: rates and ETAs come from the times stamped
// on successive samples, so the same samples always give the same output.
// Output errors are ignored: progress is best effort and must never fail a
// backup.
package progress

import (
	"sync"
	"time"
)

// DiskState is where one disk's part of the job stands.
type DiskState string

const (
	DiskRunning   DiskState = "running"
	DiskExporting DiskState = "exporting" // pull: the export is being read
	DiskDone      DiskState = "done"
	DiskFailed    DiskState = "failed"
	DiskCancelled DiskState = "cancelled"
	DiskUnknown   DiskState = "unknown" // the connection was lost before the disk ended
)

// Final reports whether the disk's part of the job has ended.
func (s DiskState) Final() bool {
	switch s {
	case DiskDone, DiskFailed, DiskCancelled, DiskUnknown:
		return true
	}
	return false
}

// Job modes, for Sample.Mode.
const (
	ModePush = "push"
	ModePull = "pull"
)

// Job outcomes, for Result.State.
const (
	JobCompleted = "completed"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
	JobUnknown   = "unknown" // the connection was lost; the outcome is unknown
)

// Disk is one disk of the job. Done and Total are 0 when libvirt does not
// say (a pull job's disks).
type Disk struct {
	Name        string
	Done, Total uint64
	State       DiskState
}

// Sample is the job as seen at one moment.
type Sample struct {
	At    time.Time // when it was taken
	Mode  string    // ModePush or ModePull, or what else is copied ("restore")
	Disks []Disk
	// Whole job, push: bytes processed / total. A sample where these and
	// the scratch numbers are all 0 carries no job numbers, and the
	// previous ones are kept.
	Done, Total uint64
	// Whole job, pull: scratch space in use / total.
	TempUsed, TempTotal uint64
}

// Result is how the job ended.
type Result struct {
	At      time.Time
	State   string // JobCompleted, JobFailed, JobCancelled or JobUnknown
	Error   string // libvirt's message when not completed
	Elapsed time.Duration
	Bytes   uint64 // bytes the job copied
	What    string // what ended, for the closing line: "backup" when empty, "restore", …
}

// Printer shows a job's progress. Its methods may be called from any
// goroutine.
type Printer interface {
	// Update shows a new sample. Disks keep the order in which they were
	// first seen; a disk missing from a sample keeps its last numbers.
	Update(s Sample)
	// Finish shows how the job ended: each disk still running or
	// exporting takes its final state from the result (completed: done,
	// with Done = Total; otherwise the result's state), then a summary.
	// Nothing is written after Finish.
	Finish(r Result)
}

// NewQuiet returns a Printer that shows nothing.
func NewQuiet() Printer { return quiet{} }

type quiet struct{}

func (quiet) Update(Sample) {}
func (quiet) Finish(Result) {}

// tracker is the job as the printers know it: the latest numbers of each
// disk and of the job, with their rates.
type tracker struct {
	mode    string
	disks   []*diskTrack
	job     Sample // Disks unused
	jobRate rateWindow
	seen    bool // at least one sample
}

type diskTrack struct {
	Disk
	rate rateWindow
}

// change is a disk whose state differs from the previous sample's; from is
// "" when the disk is new.
type change struct {
	d    *diskTrack
	from DiskState
}

func (t *tracker) disk(name string) *diskTrack {
	for _, d := range t.disks {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (t *tracker) update(s Sample) []change {
	t.seen = true
	if s.Mode != "" {
		t.mode = s.Mode
	}
	if s.Done != 0 || s.Total != 0 || s.TempUsed != 0 || s.TempTotal != 0 {
		t.job.Done, t.job.Total = s.Done, s.Total
		t.job.TempUsed, t.job.TempTotal = s.TempUsed, s.TempTotal
	}
	t.job.At = s.At
	t.jobRate.add(s.At, t.job.Done)
	var changes []change
	for _, sd := range s.Disks {
		d := t.disk(sd.Name)
		var from DiskState
		if d == nil {
			d = &diskTrack{}
			t.disks = append(t.disks, d)
		} else {
			from = d.State
		}
		d.Disk = sd
		d.rate.add(s.At, sd.Done)
		if from != sd.State {
			changes = append(changes, change{d, from})
		}
	}
	// Disks missing from this sample still age, so their rates decay.
	for _, d := range t.disks {
		if !d.rate.has(s.At) {
			d.rate.add(s.At, d.Done)
		}
	}
	return changes
}

// finish gives each unfinished disk its final state from r.
func (t *tracker) finish(r Result) []change {
	var changes []change
	for _, d := range t.disks {
		if d.State.Final() {
			continue
		}
		from := d.State
		if r.State == JobCompleted {
			d.State = DiskDone
			d.Done = d.Total
		} else {
			d.State = DiskState(r.State)
		}
		changes = append(changes, change{d, from})
	}
	if r.State == JobCompleted && t.job.Total > 0 {
		t.job.Done = t.job.Total
	}
	return changes
}

// locked serialises a printer's calls and drops those after Finish.
type locked struct {
	mu       sync.Mutex
	finished bool
}

func (l *locked) enter(finishing bool) bool {
	l.mu.Lock()
	if l.finished {
		l.mu.Unlock()
		return false
	}
	l.finished = finishing
	return true
}

func (l *locked) leave() { l.mu.Unlock() }
