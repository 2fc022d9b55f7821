package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// Two jobs on one board: each running job's disks are drawn below, named
// after the job; a note and a job's summary go above and stay; a finished
// job's disks leave the board.
func TestBoard(t *testing.T) {
	scr := &screen{width: 80}
	b := NewBoard(scr, 80)
	web, db := b.Printer("web"), b.Printer("db")
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	web.Update(Sample{At: at(0), Mode: ModePull, Disks: []Disk{{Name: "vda", Done: 0, Total: 100 << 20, State: DiskExporting}}})
	db.Update(Sample{At: at(0), Mode: ModePull, Disks: []Disk{{Name: "vda", Total: 200 << 20, State: DiskExporting}, {Name: "vdb", Total: 10 << 20, State: DiskExporting}}})
	web.Update(Sample{At: at(1), Mode: ModePull, Disks: []Disk{{Name: "vda", Done: 50 << 20, Total: 100 << 20, State: DiskExporting}}})
	got := scr.text(t)
	for _, want := range []string{"web vda   50% [=====>", "db vda     0% [...", "db vdb     0% [..."} {
		if !strings.Contains(got, want) {
			t.Errorf("the board lacks %q:\n%s", want, got)
		}
	}
	io := b.Writer("db: ")
	io.Write([]byte("Backup vbackup-1 of domain db: full\n"))
	web.Finish(Result{At: at(2), State: JobCompleted, Bytes: 100 << 20, Elapsed: 2 * time.Second})
	got = scr.text(t)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	want := []string{"db: Backup vbackup-1 of domain db: full", "web: backup completed: 100.0 MiB in 2s (50.0 MiB/s)"}
	if len(lines) != 4 || lines[0] != want[0] || lines[1] != want[1] ||
		!strings.HasPrefix(lines[2], "db vda") || !strings.HasPrefix(lines[3], "db vdb") {
		t.Fatalf("screen:\n%s\nwant %q above db's two disks", got, want)
	}
	db.Finish(Result{At: at(3), State: JobFailed, Error: "disk full"})
	if got := scr.text(t); !strings.HasSuffix(got, "db: backup failed: disk full\n") || strings.Contains(got, "db vda") {
		t.Errorf("after both ended:\n%s", got)
	}
}

// The prefixer puts the prefix before every line of a write.
func TestPrefixer(t *testing.T) {
	var out bytes.Buffer
	p := NewPrefixer(&out)
	p.Writer("vm1: ").Write([]byte("vda: done (1.0 MiB)\nbackup completed in 1s\n"))
	p.Writer("vm2: ").Write([]byte("one line\n"))
	p.Writer("vm2: ").Write(nil) // a plain printer's update with nothing to say
	if got, want := out.String(), "vm1: vda: done (1.0 MiB)\nvm1: backup completed in 1s\nvm2: one line\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
