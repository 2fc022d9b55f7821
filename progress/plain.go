package progress

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// DefaultPlainEvery is how often NewPlain repeats the progress lines when
// given no interval.
const DefaultPlainEvery = 5 * time.Second

// NewPlain returns a Printer for logs: no escape codes, whole lines only.
// Every interval (timed by the samples; DefaultPlainEvery when every <= 0)
// while a disk is still running or exporting, it writes a line for each
// such disk whose numbers are known, and one for the job:
//
//	vda: 512.0 MiB / 1.0 GiB (50%), 120.0 MiB/s, ETA 4s
//	total: 1.5 GiB / 2.0 GiB (75%), 240.0 MiB/s, ETA 2s
//	scratch: 100.0 MiB / 1.0 GiB (9%)                  (pull jobs)
//
// and at once a line for each disk whose state changes:
//
//	vda: done (1.0 GiB)
//	vdb: failed at 409.6 MiB / 1.0 GiB (40%)
//	vda: exporting
//
// and at the end a summary:
//
//	backup completed: 2.0 GiB in 9s (227.6 MiB/s)
//	backup failed: <libvirt's error>
func NewPlain(w io.Writer, every time.Duration) Printer {
	if every <= 0 {
		every = DefaultPlainEvery
	}
	return &plain{w: w, every: every}
}

type plain struct {
	locked
	w       io.Writer
	every   time.Duration
	tr      tracker
	printed bool
	last    time.Time // when the progress lines were last written
}

func (p *plain) Update(s Sample) {
	if !p.enter(false) {
		return
	}
	defer p.leave()
	var b strings.Builder
	for _, c := range p.tr.update(s) {
		// A disk starting out running says so in the progress lines.
		if c.from != "" || c.d.State != DiskRunning {
			b.WriteString(stateLine(&c.d.Disk) + "\n")
		}
	}
	// Once no disk is left running, the summary says the rest.
	active := len(p.tr.disks) == 0
	for _, d := range p.tr.disks {
		active = active || !d.State.Final()
	}
	if active && (!p.printed || s.At.Sub(p.last) >= p.every) {
		p.printed, p.last = true, s.At
		for _, d := range p.tr.disks {
			if !d.State.Final() && (d.Total > 0 || d.Done > 0) {
				fmt.Fprintf(&b, "%s: %s, %s, ETA %s\n", d.Name, counts(d.Done, d.Total),
					formatRate(d.rate.rate()), formatETA(d.rate.eta(d.Done, d.Total)))
			}
		}
		job := p.tr.job
		switch {
		case p.tr.mode == ModePull && (job.TempTotal > 0 || job.TempUsed > 0):
			fmt.Fprintf(&b, "scratch: %s\n", counts(job.TempUsed, job.TempTotal))
		case p.tr.mode != ModePull && job.Total > 0:
			fmt.Fprintf(&b, "total: %s, %s, ETA %s\n", counts(job.Done, job.Total),
				formatRate(p.tr.jobRate.rate()), formatETA(p.tr.jobRate.eta(job.Done, job.Total)))
		}
	}
	io.WriteString(p.w, b.String())
}

func (p *plain) Finish(r Result) {
	if !p.enter(true) {
		return
	}
	defer p.leave()
	var b strings.Builder
	for _, c := range p.tr.finish(r) {
		b.WriteString(stateLine(&c.d.Disk) + "\n")
	}
	b.WriteString(summary(r) + "\n")
	io.WriteString(p.w, b.String())
}

// counts is "512.0 MiB / 1.0 GiB (50%)", or the bytes alone when the total
// is unknown.
func counts(done, total uint64) string {
	if total == 0 {
		return formatBytes(done)
	}
	return fmt.Sprintf("%s / %s (%d%%)", formatBytes(done), formatBytes(total), percent(done, total))
}

func stateLine(d *Disk) string {
	switch {
	case d.State == DiskDone && (d.Total > 0 || d.Done > 0):
		return fmt.Sprintf("%s: done (%s)", d.Name, formatBytes(max(d.Done, d.Total)))
	case d.State.Final() && (d.Total > 0 || d.Done > 0):
		state := string(d.State)
		if d.State == DiskUnknown {
			state = "outcome unknown"
		}
		return fmt.Sprintf("%s: %s at %s", d.Name, state, counts(d.Done, d.Total))
	case d.State == DiskUnknown:
		return d.Name + ": outcome unknown"
	}
	return fmt.Sprintf("%s: %s", d.Name, d.State)
}
