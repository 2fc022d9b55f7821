package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/internal/testbed"
)

// A disk of a test backup: a full image (a new disk of size, or the disk's
// content so far when it had been backed up before) or an overlay on the
// disk's image in the backup before; then what the guest wrote, as qemu-io
// commands.
type verifyDiskSpec struct {
	name, size string
	full       bool
	writes     []string
}

// verifyFolder writes a folder with one backup per element of points, as
// vbackup writes them: manifests whose checksums are computed from the
// images' chains, and DISK.sums beside each image. It returns the backups'
// names.
func verifyFolder(t testing.TB, points [][]verifyDiskSpec) (string, []string) {
	t.Helper()
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := filepath.Join(t.TempDir(), "backups")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	last := map[string]string{} // disk: the last backup holding it
	var names []string
	for i, p := range points {
		store, err := chain.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		when := time.Date(2026, 11, 1+i, 12, 0, 0, 0, time.UTC)
		name := "vbackup-" + when.Format("20060102T150405Z")
		pend, err := store.Begin(name)
		if err != nil {
			t.Fatal(err)
		}
		m := chain.Manifest{Time: when, Level: chain.Full, Mode: "pull",
			Domain:     chain.Domain{Name: "vm1", UUID: "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"},
			Checkpoint: chain.Checkpoint{Name: name}}
		for _, s := range p {
			d := chain.Disk{Name: s.name, File: s.name + ".qcow2", Format: "qcow2", Level: chain.Full, Bitmap: true, Digests: s.name + ".sums"}
			img := filepath.Join(pend.Dir(), d.File)
			prev, had := last[s.name]
			switch {
			case s.full && had:
				verifyRun(t, "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", filepath.Join(dir, prev, d.File), img)
			case s.full:
				verifyRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, s.size)
			default:
				d.Level, d.Backing, m.Level = chain.Incremental, prev, chain.Incremental
				verifyRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", filepath.Join("..", prev, d.File), img)
			}
			args := []string{"-f", "qcow2"}
			for _, w := range s.writes {
				args = append(args, "-c", w)
			}
			verifyRun(t, "qemu-io", append(args, img)...)
			sums, err := os.Create(filepath.Join(pend.Dir(), d.Digests))
			if err != nil {
				t.Fatal(err)
			}
			sum, err := contentsum.File(context.Background(), img, "qcow2", contentsum.Options{Digests: sums})
			if cerr := sums.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			d.VirtualSize, d.Checksum = sum.Size, sum.String()
			m.Disks = append(m.Disks, d)
			last[s.name] = name
		}
		if _, err := pend.Commit(m); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return dir, names
}

func verifyRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// verifyPoints is six backups of a disk vda and of vdb, added in the third:
// vda's overlays overwrite data, write zeroes and part of a chunk, and
// vda starts a new full in the fifth.
var verifyPoints = [][]verifyDiskSpec{
	{{name: "vda", size: "64M", full: true, writes: []string{"write -P 0x11 0 16M"}}},
	{{name: "vda", writes: []string{"write -P 0x22 4M 4M"}}},
	{{name: "vda", writes: []string{"write -P 0x33 20M 3M"}},
		{name: "vdb", size: "16M", full: true, writes: []string{"write -P 0x44 0 8M"}}},
	{{name: "vda", writes: []string{"write -z 0 2M", "write -P 0x55 30M 4M"}},
		{name: "vdb", writes: []string{"write -P 0x66 2M 2M"}}},
	{{name: "vda", full: true, writes: []string{"write -P 0x77 40M 2M"}},
		{name: "vdb", writes: []string{"write -P 0x88 8M 4M"}}},
	{{name: "vda", writes: []string{"write -P 0x99 44M 4M", "write -P 0xaa 52228K 64K"}},
		{name: "vdb", writes: []string{"write -P 0xbb 12M 1M"}}},
}

// verifyAt runs Verify and returns what it reported, one line per disk as
// the command prints it (backup, disk, status, detail or checksum), and as
// it was reported.
func verifyAt(t *testing.T, dir, at string) ([]string, []Checked, error) {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var all []Checked
	_, err = Verify(context.Background(), store, at, func(c Checked) error {
		if (c.Status == "damaged") != (c.Found != "" || strings.HasPrefix(c.Detail, "its backing file")) {
			t.Errorf("%s %s: status %s with found %q", c.Backup, c.Disk, c.Status, c.Found)
		}
		detail := c.Checksum // as the command prints it
		if c.Detail != "" {
			detail = c.Detail
		}
		lines = append(lines, strings.Join([]string{c.Backup, c.Disk, c.Status, detail}, " "))
		all = append(all, c)
		return nil
	})
	return lines, all, err
}

// readChars is what this process has read through read(2) and its kin
// (rchar), summed over its threads in /proc/self/task/*/io: the NBD replies
// contentsum received from qemu-nbd, plus qemu-img's small JSON output.
// Not /proc/self/io: that also takes in the children the process reaped,
// qemu-nbd among them, whose reads of the images count there or not
// depending on its aio (io_uring's are not counted). A thread that ends
// takes its count out of the sum, so this can only count too little: the
// test's lower bound would catch it.
func readChars(t testing.TB) uint64 {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/io")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no /proc/self/task/*/io to count the bytes read (%v)", err)
	}
	var n uint64
	for _, task := range tasks {
		data, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended: its count is in no task now
		}
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "rchar: "); ok {
				c, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					t.Fatalf("%s: %q: %v", task, line, err)
				}
				n += c
			}
		}
	}
	return n
}

// storedData is the data the images of dir's backups hold themselves.
func storedData(t testing.TB, dir string) uint64 {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, b := range store.Backups {
		for _, d := range b.Disks {
			_, data, err := topLayer(context.Background(), b.File(d))
			if err != nil {
				t.Fatal(err)
			}
			n += data
		}
	}
	return n
}

// Verifying a folder reads what its images hold once, not each backup's
// whole chain, and reports backup by backup, disk by disk.
func TestVerifyReadsEachStoredByteOnce(t *testing.T) {
	dir, names := verifyFolder(t, verifyPoints)
	stored := storedData(t, dir)
	before := readChars(t)
	lines, _, err := verifyAt(t, dir, "all")
	read := readChars(t) - before
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, strings.Join(lines, "\n"))
	}
	var want []string
	store, _ := chain.Open(dir)
	for i, p := range verifyPoints {
		for j, s := range p {
			want = append(want, fmt.Sprintf("%s %s ok %s", names[i], s.name, store.Backups[i].Disks[j].Checksum))
		}
	}
	for i, got := range lines {
		if i >= len(want) || !strings.HasPrefix(got, want[i]) {
			t.Errorf("Verify reported\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			break
		}
	}
	if len(lines) != len(want) {
		t.Errorf("Verify reported %d disks, want %d", len(lines), len(want))
	}
	t.Logf("read %d bytes for %d stored (%.3f×)", read, stored, float64(read)/float64(stored))
	if read < stored {
		t.Errorf("read %d bytes, less than the %d stored: is this process's rchar counting the NBD replies?", read, stored)
	}
	if float64(read) > 1.2*float64(stored) {
		t.Errorf("read %d bytes, %.2f times the %d stored; want each stored byte read about once", read, float64(read)/float64(stored), stored)
	}
}

// flipData flips the byte at guest offset off in the data an image holds
// itself, behind QEMU's back.
func flipData(t *testing.T, img string, off int64) {
	t.Helper()
	var extents []struct {
		Start, Length int64
		Depth         int
		Data          bool
		Offset        *int64
	}
	if err := json.Unmarshal([]byte(verifyRun(t, "qemu-img", "map", "--output=json", "-f", "qcow2", img)), &extents); err != nil {
		t.Fatal(err)
	}
	for _, e := range extents {
		if e.Depth != 0 || !e.Data || e.Offset == nil || off < e.Start || off >= e.Start+e.Length {
			continue
		}
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		at := *e.Offset + off - e.Start
		if _, err := f.ReadAt(b, at); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x01
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s holds no data of its own at %d", img, off)
}

// A damaged point is named, and so is every later point of the same disk
// built on it; a new full, and the other disk's chain, are not.
func TestVerifyNamesDamagedPoints(t *testing.T) {
	dir, names := verifyFolder(t, verifyPoints)
	store, _ := chain.Open(dir)
	flipData(t, store.Backups[1].File(chain.Disk{File: "vda.qcow2"}), 4<<20+100)
	flipData(t, store.Backups[4].File(chain.Disk{File: "vda.qcow2"}), 10<<20+7) // the full: later overlays leave it there
	// The same file, by another name: the manifest's is the one to record.
	odd := "../" + names[2] + "/./vdb.qcow2"
	verifyRun(t, "qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", odd, store.Backups[3].File(chain.Disk{File: "vdb.qcow2"}))

	lines, all, err := verifyAt(t, dir, "all")
	sum := func(i int, disk string) string {
		d, _ := store.Backups[i].Disk(disk)
		return d.Checksum
	}
	want := []string{
		names[0] + " vda ok ",
		names[1] + " vda damaged content is sha256-1m:",
		names[2] + " vda depends builds on damaged backup " + names[1],
		names[2] + " vdb ok ",
		names[3] + " vda depends builds on damaged backup " + names[1],
		names[3] + " vdb damaged " + fmt.Sprintf("its backing file is %q, not %q", odd, filepath.Join("..", names[2], "vdb.qcow2")),
		names[4] + " vda damaged content is sha256-1m:",
		names[4] + " vdb depends builds on damaged backup " + names[3],
		names[5] + " vda depends builds on damaged backup " + names[4],
		names[5] + " vdb depends builds on damaged backup " + names[3],
	}
	if len(lines) != len(want) {
		t.Fatalf("Verify reported\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("Verify reported %q, want %q…", lines[i], want[i])
		}
		if c := all[i]; c.Found != "" && c.Found == c.Checksum {
			t.Errorf("%s %s: found %s, which the manifest records", c.Backup, c.Disk, c.Found)
		}
	}
	wantErr := fmt.Sprintf("8 of 10 disk images in %s do not match their manifests: %s (vda: damaged), %s (vda: depends), %s (vda: depends), %s (vdb: damaged), %s (vda: damaged), %s (vdb: depends), %s (vda: depends), %s (vdb: depends)",
		dir, names[1], names[2], names[3], names[3], names[4], names[4], names[5], names[5])
	if err == nil || err.Error() != wantErr {
		t.Errorf("Verify: %v\nwant %s", err, wantErr)
	}

	// One point is still checked through its whole chain: the overlay
	// built on the damaged one holds the damage too.
	lines, _, err = verifyAt(t, dir, names[2])
	if err == nil || len(lines) != 2 || !strings.HasPrefix(lines[0], names[2]+" vda damaged content is ") || lines[1] != names[2]+" vdb ok "+sum(2, "vdb") {
		t.Errorf("Verify at %s: %v\n%s", names[2], err, strings.Join(lines, "\n"))
	}
}

// A 1 GiB disk full of data and ten overlays of 8 MiB: the bytes verify
// reads for those it stores (read/stored), and how long it takes.
func BenchmarkVerifyLongChain(b *testing.B) {
	points := [][]verifyDiskSpec{{{name: "vda", size: "1G", full: true, writes: []string{"write -P 0x11 0 1G"}}}}
	for i := range 10 {
		points = append(points, []verifyDiskSpec{{name: "vda", writes: []string{fmt.Sprintf("write -P 0x%02x %dM 8M", 0x20+i, 8+i*96)}}})
	}
	dir, _ := verifyFolder(b, points)
	store, err := chain.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	stored := storedData(b, dir)
	var read uint64
	for b.Loop() {
		before := readChars(b)
		if _, err := Verify(context.Background(), store, "all", func(Checked) error { return nil }); err != nil {
			b.Fatal(err)
		}
		read += readChars(b) - before
	}
	b.ReportMetric(float64(read)/float64(b.N)/float64(stored), "read/stored")
	b.ReportMetric(float64(stored)/(1<<20), "MiB-stored")
}
