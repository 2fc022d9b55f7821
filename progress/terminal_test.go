package progress

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// screen interprets the escapes the terminal printer may emit (CR, LF as
// CR LF, cursor up, erase line, erase below) and fails on any other.
type screen struct {
	width    int
	rows     [][]rune
	row, col int
	wrap     bool // let text wrap at the width (the summary may)
}

func (s *screen) Write(p []byte) (int, error) {
	in := []rune(string(p))
	for i := 0; i < len(in); i++ {
		switch r := in[i]; r {
		case '\r':
			s.col = 0
		case '\n':
			s.row, s.col = s.row+1, 0
		case '\x1b':
			j := i + 1
			if j >= len(in) || in[j] != '[' {
				return 0, fmt.Errorf("bare escape at %d in %q", i, p)
			}
			j++
			n := 0
			for j < len(in) && in[j] >= '0' && in[j] <= '9' {
				n = n*10 + int(in[j]-'0')
				j++
			}
			if j >= len(in) {
				return 0, fmt.Errorf("unterminated escape in %q", p)
			}
			switch in[j] {
			case 'A':
				if s.row -= max(n, 1); s.row < 0 {
					return 0, fmt.Errorf("cursor moved above the top in %q", p)
				}
			case 'K':
				if n != 2 {
					return 0, fmt.Errorf("erase line mode %d in %q", n, p)
				}
				s.line(s.row)
				s.rows[s.row] = nil
			case 'J':
				if n != 0 {
					return 0, fmt.Errorf("erase display mode %d in %q", n, p)
				}
				s.line(s.row)
				s.rows[s.row] = s.rows[s.row][:min(s.col, len(s.rows[s.row]))]
				s.rows = s.rows[:s.row+1]
			default:
				return 0, fmt.Errorf("unexpected escape %q in %q", string(in[i:j+1]), p)
			}
			i = j
		default:
			if r < ' ' {
				return 0, fmt.Errorf("control character %q in %q", r, p)
			}
			if s.col == s.width {
				if !s.wrap {
					return 0, fmt.Errorf("line wider than %d columns in %q", s.width, p)
				}
				s.row, s.col = s.row+1, 0
			}
			l := s.line(s.row)
			for len(*l) <= s.col {
				*l = append(*l, ' ')
			}
			(*l)[s.col] = r
			s.col++
		}
	}
	return len(p), nil
}

func (s *screen) line(i int) *[]rune {
	for len(s.rows) <= i {
		s.rows = append(s.rows, nil)
	}
	return &s.rows[i]
}

// text is the screen above the cursor; it fails unless the cursor is at
// the start of the line below all the text.
func (s *screen) text(t *testing.T) string {
	t.Helper()
	if s.col != 0 {
		t.Errorf("cursor at column %d, want 0", s.col)
	}
	for i := s.row; i < len(s.rows); i++ {
		if len(s.rows[i]) > 0 {
			t.Errorf("line %d below the cursor (line %d) is left over: %q", i, s.row, string(s.rows[i]))
		}
	}
	var b strings.Builder
	for i := 0; i < s.row && i < len(s.rows); i++ {
		b.WriteString(strings.TrimRight(string(s.rows[i]), " ") + "\n")
	}
	for i := len(s.rows); i < s.row; i++ {
		b.WriteString("\n")
	}
	return b.String()
}

// splitter hands each Write to the screen and keeps it apart.
type splitter struct {
	scr    *screen
	writes []string
	err    error
}

func (w *splitter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	if _, err := w.scr.Write(p); err != nil && w.err == nil {
		w.err = err
	}
	return len(p), nil
}

// runTerminal plays sc and returns each screen after each call.
func runTerminal(t *testing.T, sc script, width int) (frames string, out *splitter) {
	t.Helper()
	scr := &screen{width: width}
	out = &splitter{scr: scr}
	p := NewTerminal(out, width)
	var b strings.Builder
	for i, s := range sc.samples {
		p.Update(s)
		fmt.Fprintf(&b, "-- update %d (+%s)\n%s", i, s.At.Sub(t0), scr.text(t))
	}
	scr.wrap = true
	p.Finish(sc.result)
	fmt.Fprintf(&b, "-- finish\n%s", scr.text(t))
	if out.err != nil {
		t.Fatal(out.err)
	}
	// Nothing after Finish.
	n := len(out.writes)
	p.Update(sc.samples[0])
	p.Finish(sc.result)
	if len(out.writes) != n {
		t.Errorf("output after Finish: %q", out.writes[n:])
	}
	return b.String(), out
}

func TestTerminal(t *testing.T) {
	for _, sc := range scripts() {
		t.Run(sc.name, func(t *testing.T) {
			frames, out := runTerminal(t, sc, 80)
			golden(t, sc.name+".terminal", frames)
			if all := strings.Join(out.writes, ""); strings.Contains(all, "\x1b[2J") || strings.Contains(all, "\x1b[H") {
				t.Errorf("the screen was cleared: %q", all)
			}
		})
	}
}

func TestTerminalNarrow(t *testing.T) {
	frames, _ := runTerminal(t, pushTwoDisks(), 40)
	golden(t, "push-narrow.terminal", frames)
}

// Only the lines that changed are written, and an unchanged sample writes
// nothing.
func TestTerminalRedrawsOnlyChanges(t *testing.T) {
	var buf bytes.Buffer
	p := NewTerminal(&buf, 80)
	s := Sample{At: t0, Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}, {"vdb", GiB, GiB, DiskDone}}, Total: 2 * GiB, Done: GiB}
	p.Update(s)
	buf.Reset()
	p.Update(s)
	if buf.Len() != 0 {
		t.Errorf("an unchanged sample wrote %q", buf.String())
	}
	s.At = at(time.Second)
	s.Disks = []Disk{{"vda", 100 * MiB, GiB, DiskRunning}, {"vdb", GiB, GiB, DiskDone}}
	s.Done = GiB + 100*MiB
	p.Update(s)
	want := "\x1b[3A" +
		"\r\x1b[2Kvda      9% [>..............]  100.0 MiB / 1.0 GiB  100.0 MiB/s  ETA 9s\n" +
		"\n" +
		"\r\x1b[2Ktotal   54% [=======>.......]  1.1 GiB / 2.0 GiB  100.0 MiB/s  ETA 9s\n"
	if got := buf.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// A disk seen later adds a line; the frame grows below the old one.
func TestTerminalNewDisk(t *testing.T) {
	scr := &screen{width: 80}
	p := NewTerminal(scr, 80)
	p.Update(Sample{At: t0, Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}}, Total: GiB})
	p.Update(Sample{At: at(time.Second), Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}, {"vdb", 0, GiB, DiskRunning}}, Total: 2 * GiB})
	want := "vda      0% [...............]  0 B / 1.0 GiB  0 B/s  ETA -\n" +
		"vdb      0% [...............]  0 B / 1.0 GiB  -  ETA -\n" +
		"total    0% [...............]  0 B / 2.0 GiB  0 B/s  ETA -\n"
	if got := scr.text(t); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}

func TestTerminalFinishWithoutSamples(t *testing.T) {
	var buf bytes.Buffer
	p := NewTerminal(&buf, 80)
	p.Finish(Result{State: JobFailed, Error: "domain is not running"})
	if got, want := buf.String(), "backup failed: domain is not running\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
