package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// Prefixer shares one stream between several jobs running at once (the
// domains of 'vbackup backup --all'): each Writer puts its prefix before
// every line, and the lines of one write stay together.
type Prefixer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewPrefixer returns a Prefixer writing to w.
func NewPrefixer(w io.Writer) *Prefixer { return &Prefixer{w: w} }

// Writer returns a writer whose lines go to the stream, each after prefix.
func (p *Prefixer) Writer(prefix string) io.Writer {
	return writerFunc(func(b []byte) (int, error) {
		text := prefixLines(prefix, string(b))
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, err := io.WriteString(p.w, text); err != nil {
			return 0, err
		}
		return len(b), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// prefixLines puts prefix before every line of text, ending it with a
// newline; no text is no line.
func prefixLines(prefix, text string) string {
	if text == "" {
		return ""
	}
	text = strings.TrimSuffix(text, "\n")
	var b strings.Builder
	for _, l := range strings.Split(text, "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// Board shows several jobs at once on a terminal: one line per disk of
// each job that runs, named "JOB DISK", redrawn in place below everything
// else. Each job's closing summary ("vm1: backup completed: …") and the
// lines written through Writer go above it, and stay.
type Board struct {
	mu   sync.Mutex
	term terminal // its redraw, its width, and the frame on screen
	jobs []*boardJob
}

// NewBoard returns a Board for a terminal width columns wide (80 when
// width <= 0).
func NewBoard(w io.Writer, width int) *Board {
	if width <= 0 {
		width = 80
	}
	return &Board{term: terminal{w: w, width: width}}
}

// Printer returns the Printer of one job, shown as name. Its disks appear
// with its first sample and leave at Finish.
func (b *Board) Printer(name string) Printer {
	j := &boardJob{b: b, name: name}
	b.mu.Lock()
	b.jobs = append(b.jobs, j)
	b.mu.Unlock()
	return j
}

// Writer returns a writer whose lines go above the board, each after
// prefix.
func (b *Board) Writer(prefix string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		if len(p) == 0 {
			return 0, nil
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		b.above(prefixLines(prefix, string(p)))
		return len(p), nil
	})
}

// above writes text above the board: the board is cleared, the text
// written where it stood, and the board drawn again below it.
func (b *Board) above(text string) {
	var out strings.Builder
	if n := len(b.term.shown); n > 0 {
		fmt.Fprintf(&out, "\x1b[%dA\r\x1b[J", n)
	}
	out.WriteString(text)
	b.term.shown = nil
	b.term.redraw(&out, b.frame())
	io.WriteString(b.term.w, out.String())
}

func (b *Board) draw() {
	var out strings.Builder
	b.term.redraw(&out, b.frame())
	io.WriteString(b.term.w, out.String())
}

// frame is a line per disk of every job that has started and not ended.
func (b *Board) frame() []string {
	type row struct {
		label string
		d     *diskTrack
	}
	var rows []row
	nameW := 0
	for _, j := range b.jobs {
		if !j.tr.seen || j.done {
			continue
		}
		for _, d := range j.tr.disks {
			r := row{j.name + " " + d.Name, d}
			nameW = max(nameW, len([]rune(r.label)))
			rows = append(rows, r)
		}
	}
	barW := min(max(b.term.width-nameW-60, 10), 30)
	lines := make([]string, 0, len(rows))
	for _, r := range rows {
		tail := string(r.d.State)
		if !r.d.State.Final() && r.d.Total > 0 {
			tail = formatRate(r.d.rate.rate()) + "  ETA " + formatETA(r.d.rate.eta(r.d.Done, r.d.Total))
		}
		lines = append(lines, b.term.line(r.label, nameW, barW, r.d.Done, r.d.Total, tail))
	}
	return lines
}

type boardJob struct {
	b    *Board
	name string
	tr   tracker
	done bool
}

func (j *boardJob) Update(s Sample) {
	j.b.mu.Lock()
	defer j.b.mu.Unlock()
	if j.done {
		return
	}
	j.tr.update(s)
	j.b.draw()
}

func (j *boardJob) Finish(r Result) {
	j.b.mu.Lock()
	defer j.b.mu.Unlock()
	if j.done {
		return
	}
	j.done = true
	j.tr.finish(r)
	j.b.jobs = removeJob(j.b.jobs, j)
	j.b.above(j.name + ": " + summary(r) + "\n")
}

func removeJob(jobs []*boardJob, j *boardJob) []*boardJob {
	for i, x := range jobs {
		if x == j {
			return append(jobs[:i:i], jobs[i+1:]...)
		}
	}
	return jobs
}
