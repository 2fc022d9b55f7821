package progress

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/schollz/progressbar/v3"
)

// NewTerminal returns a Printer for a terminal width columns wide (80 when
// width <= 0): a bar per disk and one for the job, redrawn in place, then
// the final frame and a summary, with the cursor below them.
func NewTerminal(w io.Writer, width int) Printer {
	if width <= 0 {
		width = 80
	}
	return &terminal{w: w, width: width}
}

type terminal struct {
	locked
	w     io.Writer
	width int
	tr    tracker
	shown []string // the frame on screen; the cursor is on the line below it
}

func (t *terminal) Update(s Sample) {
	if !t.enter(false) {
		return
	}
	defer t.leave()
	t.tr.update(s)
	var b strings.Builder
	t.redraw(&b, t.frame(""))
	io.WriteString(t.w, b.String())
}

func (t *terminal) Finish(r Result) {
	if !t.enter(true) {
		return
	}
	defer t.leave()
	var b strings.Builder
	if t.tr.seen {
		t.tr.finish(r)
		t.redraw(&b, t.frame(r.State))
	}
	// The summary is not cut to the width: it may carry libvirt's error,
	// and nothing is redrawn over it.
	b.WriteString(summary(r) + "\n")
	io.WriteString(t.w, b.String())
}

// redraw turns the frame on screen into lines. Only the lines that differ
// are rewritten, each cleared just before, so nothing flickers; the cursor
// moves up no further than the first changed line.
func (t *terminal) redraw(b *strings.Builder, lines []string) {
	first := 0
	for first < len(lines) && first < len(t.shown) && lines[first] == t.shown[first] {
		first++
	}
	if first == len(lines) && first == len(t.shown) {
		return
	}
	if up := len(t.shown) - first; up > 0 {
		fmt.Fprintf(b, "\x1b[%dA", up)
	}
	for i := first; i < len(lines); i++ {
		if i < len(t.shown) && t.shown[i] == lines[i] {
			b.WriteString("\n")
			continue
		}
		b.WriteString("\r\x1b[2K" + lines[i] + "\n")
	}
	if len(lines) < len(t.shown) {
		b.WriteString("\x1b[J")
	}
	t.shown = lines
}

// frame lays out one line per disk and the job line; final is the job's
// outcome once it has ended.
func (t *terminal) frame(final string) []string {
	label := "total"
	if t.tr.mode == ModePull {
		label = "scratch"
	}
	nameW := len(label)
	for _, d := range t.tr.disks {
		nameW = max(nameW, len([]rune(d.Name)))
	}
	// After the bar come up to 51 columns ("  1023.9 MiB / 1023.9 GiB
	// 1023.9 MiB/s  ETA 99h59m"), before it the name and percent: the bar
	// gets what is left, within bounds, and a line too long is cut.
	barW := min(max(t.width-nameW-60, 10), 30)
	lines := make([]string, 0, len(t.tr.disks)+1)
	for _, d := range t.tr.disks {
		tail := string(d.State)
		if !d.State.Final() && d.Total > 0 {
			tail = formatRate(d.rate.rate()) + "  ETA " + formatETA(d.rate.eta(d.Done, d.Total))
		}
		lines = append(lines, t.line(d.Name, nameW, barW, d.Done, d.Total, tail))
	}
	job := t.tr.job
	if t.tr.mode == ModePull {
		lines = append(lines, t.line(label, nameW, barW, job.TempUsed, job.TempTotal, final))
	} else {
		tail := final
		if tail == "" && job.Total > 0 {
			tail = formatRate(t.tr.jobRate.rate()) + "  ETA " + formatETA(t.tr.jobRate.eta(job.Done, job.Total))
		}
		lines = append(lines, t.line(label, nameW, barW, job.Done, job.Total, tail))
	}
	return lines
}

// line is "name  pct [bar]  done / total  tail", or "name  done  tail"
// when the total is unknown.
func (t *terminal) line(name string, nameW, barW int, done, total uint64, tail string) string {
	var s string
	if total == 0 {
		s = padRight(name, nameW)
		if done > 0 {
			s += "  " + formatBytes(done)
		}
	} else {
		s = drawBar(padRight(name, nameW)+" ", done, total, barW) +
			"  " + formatBytes(done) + " / " + formatBytes(total)
	}
	if tail != "" {
		s += "  " + tail
	}
	return truncate(s, t.width)
}

// drawBar renders "desc pct [====>....]" with the progress-bar library. A
// new bar is made for each frame: the library keeps its own clock and
// latches "finished", while a frame must depend on the samples alone. Its
// rate and time prediction are off (ours come from the samples), and it
// writes nowhere: only its rendering is used.
func drawBar(desc string, done, total uint64, width int) string {
	// The library counts in int64.
	for total > math.MaxInt64 {
		done, total = done/2, total/2
	}
	done = min(done, total)
	bar := progressbar.NewOptions64(int64(total),
		progressbar.OptionSetWriter(io.Discard),
		progressbar.OptionSetWidth(width),
		progressbar.OptionSetTheme(progressbar.ThemeASCII),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionShowBytes(false),
	)
	_ = bar.Set64(int64(done))
	if bar.String() == "" { // Set64 draws only when the percent moves
		_ = bar.RenderBlank()
	}
	return strings.TrimRight(strings.TrimPrefix(bar.String(), "\r"), " ")
}
