package progress

import (
	"encoding/json"
	"io"
	"strings"
	"time"
)

// NewJSON returns a Printer that writes one JSON object per line, for
// programs. Every object has "type" and "time" (the sample's or result's
// time, RFC 3339 with nanoseconds); the field names are stable:
//
//	{"type":"progress","time":T,"disk":"vda","done":N,"total":N,"rate":N}
//	    a disk's bytes done and total (0 when libvirt does not say, as for
//	    a pull job's disks) and its smoothed rate in bytes per second (0
//	    while unknown). Written when a disk is first seen and whenever its
//	    done or total changes, not on every sample.
//	{"type":"disk-state","time":T,"disk":"vda","state":S,"done":N,"total":N}
//	    a disk was first seen, or its state changed. S is "running",
//	    "exporting", "done", "failed", "cancelled" or "unknown".
//	{"type":"job","time":T,"mode":M,"done":N,"total":N,"rate":N,"temp_used":N,"temp_total":N}
//	    the whole job: mode "push" or "pull"; bytes done and total (push)
//	    with their rate; scratch space in use and its total (pull).
//	    Written when first known and whenever a count changes.
//	{"type":"result","time":T,"state":S,"error":E,"bytes":N,"elapsed_ms":N}
//	    always the last line. S is "completed", "failed", "cancelled" or
//	    "unknown" (the connection was lost); E is libvirt's message, "" when
//	    completed.
//
// Within one update a disk's progress comes before its disk-state, and the
// job after the disks. When a job completes, each disk's last progress has
// done == total, and each disk's last disk-state is final.
func NewJSON(w io.Writer) Printer {
	return &jsonPrinter{w: w, sent: map[string][2]uint64{}}
}

type jsonProgress struct {
	Type  string    `json:"type"`
	Time  time.Time `json:"time"`
	Disk  string    `json:"disk"`
	Done  uint64    `json:"done"`
	Total uint64    `json:"total"`
	Rate  uint64    `json:"rate"`
}

type jsonDiskState struct {
	Type  string    `json:"type"`
	Time  time.Time `json:"time"`
	Disk  string    `json:"disk"`
	State DiskState `json:"state"`
	Done  uint64    `json:"done"`
	Total uint64    `json:"total"`
}

type jsonJob struct {
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Mode      string    `json:"mode"`
	Done      uint64    `json:"done"`
	Total     uint64    `json:"total"`
	Rate      uint64    `json:"rate"`
	TempUsed  uint64    `json:"temp_used"`
	TempTotal uint64    `json:"temp_total"`
}

type jsonResult struct {
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	State     string    `json:"state"`
	Error     string    `json:"error"`
	Bytes     uint64    `json:"bytes"`
	ElapsedMS int64     `json:"elapsed_ms"`
}

type jsonPrinter struct {
	locked
	w       io.Writer
	tr      tracker
	sent    map[string][2]uint64 // per disk, the done and total last written
	sentJob *jsonJob
}

func (p *jsonPrinter) Update(s Sample) {
	if !p.enter(false) {
		return
	}
	defer p.leave()
	var b strings.Builder
	p.emit(&b, s.At, p.tr.update(s))
	io.WriteString(p.w, b.String())
}

func (p *jsonPrinter) Finish(r Result) {
	if !p.enter(true) {
		return
	}
	defer p.leave()
	var b strings.Builder
	if p.tr.seen {
		p.emit(&b, r.At, p.tr.finish(r))
	}
	enc := json.NewEncoder(&b)
	enc.Encode(jsonResult{Type: "result", Time: r.At, State: r.State, Error: r.Error,
		Bytes: r.Bytes, ElapsedMS: r.Elapsed.Milliseconds()})
	io.WriteString(p.w, b.String())
}

func (p *jsonPrinter) emit(b *strings.Builder, at time.Time, changes []change) {
	enc := json.NewEncoder(b)
	for _, d := range p.tr.disks {
		counts := [2]uint64{d.Done, d.Total}
		if sent, ok := p.sent[d.Name]; !ok || sent != counts {
			p.sent[d.Name] = counts
			r, _ := d.rate.rate()
			enc.Encode(jsonProgress{Type: "progress", Time: at, Disk: d.Name, Done: d.Done, Total: d.Total, Rate: uint64(r)})
		}
		for _, c := range changes {
			if c.d == d {
				enc.Encode(jsonDiskState{Type: "disk-state", Time: at, Disk: d.Name, State: d.State, Done: d.Done, Total: d.Total})
			}
		}
	}
	job := p.tr.job
	r, _ := p.tr.jobRate.rate()
	j := jsonJob{Type: "job", Time: at, Mode: p.tr.mode, Done: job.Done, Total: job.Total, Rate: uint64(r),
		TempUsed: job.TempUsed, TempTotal: job.TempTotal}
	if s := p.sentJob; s == nil || s.Mode != j.Mode || s.Done != j.Done || s.Total != j.Total ||
		s.TempUsed != j.TempUsed || s.TempTotal != j.TempTotal {
		p.sentJob = &j
		enc.Encode(j)
	}
}
