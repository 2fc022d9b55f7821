package progress

import (
	"strings"
	"testing"
	"time"
)

func runPlain(sc script, every time.Duration) string {
	var b strings.Builder
	p := NewPlain(&b, every)
	for _, s := range sc.samples {
		p.Update(s)
	}
	p.Finish(sc.result)
	p.Update(sc.samples[0])
	p.Finish(sc.result)
	return b.String()
}

func TestPlain(t *testing.T) {
	for _, sc := range scripts() {
		t.Run(sc.name, func(t *testing.T) {
			got := runPlain(sc, 2*time.Second)
			golden(t, sc.name+".plain", got)
			if strings.ContainsAny(got, "\x1b\r") {
				t.Errorf("escape codes or carriage returns in plain output: %q", got)
			}
		})
	}
}

// The example lines of the issue, verbatim.
func TestPlainLines(t *testing.T) {
	var b strings.Builder
	p := NewPlain(&b, 4*time.Second)
	// 512 MiB in 4.27s: 120 MiB/s.
	for _, s := range []struct {
		at   time.Duration
		done uint64
	}{{0, 0}, {4266666667, 512 * MiB}} {
		p.Update(Sample{At: at(s.at), Mode: ModePush,
			Disks: []Disk{{"vda", s.done, GiB, DiskRunning}}, Done: s.done, Total: GiB})
	}
	p.Update(Sample{At: at(9 * time.Second), Mode: ModePush, Disks: []Disk{{"vda", GiB, GiB, DiskDone}}, Done: GiB, Total: GiB})
	p.Finish(Result{At: at(9 * time.Second), State: JobCompleted, Elapsed: 9 * time.Second, Bytes: 2 * GiB})
	want := `vda: 0 B / 1.0 GiB (0%), -, ETA -
total: 0 B / 1.0 GiB (0%), -, ETA -
vda: 512.0 MiB / 1.0 GiB (50%), 120.0 MiB/s, ETA 4s
total: 512.0 MiB / 1.0 GiB (50%), 120.0 MiB/s, ETA 4s
vda: done (1.0 GiB)
backup completed: 2.0 GiB in 9s (227.6 MiB/s)
`
	if got := b.String(); got != want {
		t.Errorf("got\n%swant\n%s", got, want)
	}
}

func TestPlainDefaultInterval(t *testing.T) {
	var b strings.Builder
	p := NewPlain(&b, 0)
	for i := 0; i <= 5; i++ {
		p.Update(Sample{At: at(time.Duration(i) * time.Second), Mode: ModePush,
			Disks: []Disk{{"vda", uint64(i) * MiB, GiB, DiskRunning}}})
	}
	if n := strings.Count(b.String(), "vda:"); n != 2 {
		t.Errorf("%d progress lines in 5s, want 2 (at 0s and 5s):\n%s", n, b.String())
	}
}
