package progress

import (
	"io"
	"sync"
	"testing"
	"time"
)

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		512 * MiB: "512.0 MiB", GiB - 1: "1.0 GiB", 2 * GiB: "2.0 GiB",
		1<<64 - 1: "16.0 EiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", 9 * time.Second: "9s", 1499 * time.Millisecond: "1s",
		245 * time.Second: "4m05s", 2*time.Hour + 3*time.Minute + 59*time.Second: "2h03m",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		done, total uint64
		want        int
	}{{0, 0, 0}, {5, 0, 0}, {0, 10, 0}, {999, 1000, 99}, {1000, 1000, 100}, {2000, 1000, 100}, {1<<64 - 2, 1<<64 - 1, 99}} {
		if got := percent(c.done, c.total); got != c.want {
			t.Errorf("percent(%d, %d) = %d, want %d", c.done, c.total, got, c.want)
		}
	}
}

func TestRateWindow(t *testing.T) {
	var w rateWindow
	if _, ok := w.rate(); ok {
		t.Error("a rate from no samples")
	}
	w.add(t0, 0)
	w.add(t0, 100) // same time: no division by zero
	if _, ok := w.rate(); ok {
		t.Error("a rate from one instant")
	}
	if _, ok := w.eta(100, 200); ok {
		t.Error("an ETA without a rate")
	}
	for i := 1; i <= 20; i++ {
		w.add(at(time.Duration(i)*time.Second), 100+uint64(i)*10)
	}
	if r, ok := w.rate(); !ok || r != 10 {
		t.Errorf("rate = %v, %v; want 10", r, ok)
	}
	if len(w.pts) > 6 {
		t.Errorf("%d points kept for a %s window at 1/s", len(w.pts), rateSpan)
	}
	if d, ok := w.eta(300, 400); !ok || d != 10*time.Second {
		t.Errorf("eta = %s, %v; want 10s", d, ok)
	}
	w.add(at(19*time.Second), 0) // back in time and count: start over
	if _, ok := w.rate(); ok {
		t.Error("a rate across a reset")
	}
	// Stalled: rate 0, ETA unknown.
	w.add(at(30*time.Second), 0)
	if r, ok := w.rate(); !ok || r != 0 {
		t.Errorf("stalled rate = %v, %v", r, ok)
	}
	if _, ok := w.eta(0, 10); ok {
		t.Error("an ETA while stalled")
	}
}

// Printers may be fed from several goroutines (go test -race).
func TestConcurrent(t *testing.T) {
	for name, p := range map[string]Printer{
		"terminal": NewTerminal(io.Discard, 80), "plain": NewPlain(io.Discard, time.Second),
		"json": NewJSON(io.Discard), "quiet": NewQuiet(),
	} {
		t.Run(name, func(t *testing.T) {
			sc := pushTwoDisks()
			var wg sync.WaitGroup
			for _, s := range sc.samples {
				wg.Go(func() { p.Update(s) })
			}
			wg.Go(func() { p.Finish(sc.result) })
			wg.Wait()
		})
	}
}

// The closing line names what ended: a restore reads from the backup, not
// from a job.
func TestSummaryNamesWhatEnded(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want string
	}{
		{Result{State: JobCompleted, Bytes: 1 << 30, Elapsed: 2 * time.Second, What: "restore"}, "restore completed: 1.0 GiB in 2s (512.0 MiB/s)"},
		{Result{State: JobFailed, Error: "disk vda: EOF", What: "restore"}, "restore failed: disk vda: EOF"},
		{Result{State: JobCompleted, Elapsed: time.Second}, "backup completed in 1s"},
	} {
		if got := summary(tc.r); got != tc.want {
			t.Errorf("summary(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}
