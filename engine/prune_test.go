package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/progress"
)

// point is one backup of a test chain: when, and what the "guest" wrote
// before it (offset and length in MiB, with a pattern).
type point struct {
	day       string // 2026-11-30
	off, size int
	full      bool
}

// makeChain writes a folder of backups of one qcow2 disk vda (64 MiB), with
// manifests whose checksums are computed from the images, as vbackup
// writes them: each incremental an overlay on the one before.
func makeChain(t *testing.T, points []point) (string, []string) {
	t.Helper()
	return makeChainOf(t, points, "")
}

// makeChainOf is makeChain with images written as fetch writes them, their
// clusters compressed with compress ("zstd", "zlib"; "" for qemu-img's
// plain images).
func makeChainOf(t *testing.T, points []point, compress string) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "backups")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var names []string
	prev := ""
	for i, p := range points {
		store, err := chain.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		when, err := time.Parse(time.DateOnly, p.day)
		if err != nil {
			t.Fatal(err)
		}
		when = when.Add(time.Hour)
		name := "vbackup-" + when.Format("20060102T150405Z")
		pend, err := store.Begin(name)
		if err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(pend.Dir(), "vda.qcow2")
		d := chain.Disk{Name: "vda", File: "vda.qcow2", Format: "qcow2", Level: chain.Full, Bitmap: true}
		args := []string{"create", "-q", "-f", "qcow2", img, "64M"}
		if prev != "" && !p.full {
			d.Level, d.Backing = chain.Incremental, prev
			args = []string{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../" + prev + "/vda.qcow2", img}
		}
		if compress != "" {
			if p.full && prev != "" {
				t.Fatal("makeChainOf: a compressed full after the first is not made here")
			}
			writeCompressedPoint(t, img, d.Backing, i, p, compress)
		} else {
			run(t, "qemu-img", args...)
		}
		if p.full && prev != "" {
			// A new full holds the whole disk as it is now.
			run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", filepath.Join(dir, prev, "vda.qcow2"), img+".tmp")
			if err := os.Rename(img+".tmp", img); err != nil {
				t.Fatal(err)
			}
		}
		if compress == "" {
			run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%02x %dM %dM", 0x10+i, p.off, p.size), img)
		}
		sum, err := contentsum.File(context.Background(), img, "qcow2", contentsum.Options{})
		if err != nil {
			t.Fatal(err)
		}
		d.VirtualSize, d.Checksum = sum.Size, sum.String()
		level := chain.Full
		if d.Level == chain.Incremental {
			level = chain.Incremental
		}
		m := chain.Manifest{Time: when, Level: level, Mode: "pull",
			Domain:     chain.Domain{Name: "vm1", UUID: "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"},
			Checkpoint: chain.Checkpoint{Name: name}, Disks: []chain.Disk{d}}
		if _, err := pend.Commit(m); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		prev = name
	}
	return dir, names
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// verifyAll checks every listed backup of dir against its manifest, as
// 'vbackup verify' does, and returns their names.
func verifyAll(t *testing.T, dir string) []string {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	_, err = Verify(context.Background(), store, "all", func(c Checked) error {
		if c.Status != "ok" {
			bad = append(bad, c.Backup+": "+c.Status+" "+c.Detail)
		}
		return nil
	})
	if err != nil || len(bad) > 0 {
		t.Fatalf("verify: %v %v", err, bad)
	}
	var names []string
	for _, b := range store.Backups {
		names = append(names, b.Name())
	}
	return names
}

func prune(t *testing.T, dir string, p Policy) Pruned {
	t.Helper()
	res, err := Prune(context.Background(), PruneRequest{Dir: dir, Policy: p, Now: time.Now}, progress.NewNotifier(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Removing the oldest full (the daily steady state) and a middle point:
// every kept point still holds what it held, and the space of what later
// points overwrote is freed.
func TestPruneKeepsPoints(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8}, {day: "2026-10-31", off: 20, size: 4},
		{day: "2026-11-01", off: 4, size: 4}, {day: "2026-11-02", off: 30, size: 2}})
	res := prune(t, dir, Policy{Last: 3})
	got := verifyAll(t, dir)
	if strings.Join(got, " ") != strings.Join(names[2:], " ") {
		t.Fatalf("kept %v, want %v", got, names[2:])
	}
	if len(res.Merges) != 2 || !res.Merges[0].Down || !res.Merges[1].Down {
		t.Errorf("merges %+v: want the full taken twice into the next", res.Merges)
	}
	store, _ := chain.Open(dir)
	if d, _ := store.Backups[0].Disk("vda"); d.Level != chain.Full || d.Backing != "" || store.Backups[0].Level != chain.Full {
		t.Errorf("the oldest kept point is %s/%s on %q; want a full", store.Backups[0].Level, d.Level, d.Backing)
	}
	if res.Freed == 0 {
		t.Error("nothing freed")
	}
	for _, b := range store.Backups {
		imageCheck(t, filepath.Join(dir, b.Name(), "vda.qcow2"), false)
	}

	// A middle point: the newest of October and of November are kept.
	res = prune(t, dir, Policy{Monthly: 2})
	got = verifyAll(t, dir)
	if strings.Join(got, " ") != names[2]+" "+names[4] {
		t.Fatalf("kept %v", got)
	}
	if len(res.Merges) != 1 || res.Merges[0].Down || res.Merges[0].Into != names[4] {
		t.Errorf("merges %+v: want %s's data up into %s", res.Merges, names[3], names[4])
	}
	store, _ = chain.Open(dir)
	if d, _ := store.Backups[1].Disk("vda"); d.Backing != names[2] {
		t.Errorf("%s builds on %s, want %s", names[4], d.Backing, names[2])
	}
	imageCheck(t, filepath.Join(dir, names[4], "vda.qcow2"), false)
}

// A prune stopped between any two steps (as a crash stops it) leaves every
// listed backup verifiable, and the next prune completes the removal and
// says so.
func TestPruneStoppedAnywhere(t *testing.T) {
	crash := errors.New("crash")
	for _, step := range []string{"recorded", "commit written", "commit mapped", "commit freed", "committed", "rewritten as full",
		"rebase written", "rebase mapped", "rebased", "merged"} {
		t.Run(step, func(t *testing.T) {
			dir, names := makeChain(t, []point{{day: "2026-10-30", off: 0, size: 16}, {day: "2026-10-31", off: 8, size: 8},
				{day: "2026-11-01", off: 20, size: 4}, {day: "2026-11-02", off: 2, size: 4}})
			policy := Policy{Last: 2}
			if strings.HasPrefix(step, "rebase") {
				// The oldest full goes into October's last, then November's
				// first goes up into the newest.
				policy = Policy{Monthly: 2}
			}
			stop = func(s string) error {
				if s == step {
					return crash
				}
				return nil
			}
			_, err := Prune(context.Background(), PruneRequest{Dir: dir, Policy: policy, Now: time.Now}, progress.NewNotifier(nil, nil))
			stop = func(string) error { return nil }
			if !errors.Is(err, crash) {
				t.Fatalf("prune stopped at %s: %v", step, err)
			}
			listed := verifyAll(t, dir)
			for _, n := range listed {
				if n == removedName(names, step) {
					t.Errorf("the backup being removed is still listed: %v", listed)
				}
			}
			var said strings.Builder
			res, err := Prune(context.Background(), PruneRequest{Dir: dir, Policy: policy, Now: time.Now}, progress.NewNotifier(&said, &said))
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed != removedName(names, step) || !strings.Contains(said.String(), "completing the removal of backup "+res.Completed) {
				t.Errorf("completed %q, said %q", res.Completed, said.String())
			}
			verifyAll(t, dir)
			if _, err := os.Stat(filepath.Join(dir, removedName(names, step))); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the removed backup's folder is left: %v", err)
			}
		})
	}
}

func removedName(names []string, step string) string {
	if strings.HasPrefix(step, "rebase") {
		return names[2]
	}
	return names[0]
}

// A prune stopped inside the end of a removal, after the removed backup's
// folder was hidden and before its record went: the next prune removes
// both and lists every backup as before.
func TestPruneStoppedAtTheEnd(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-30", off: 0, size: 4}, {day: "2026-10-31", off: 8, size: 4, full: true}})
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := chain.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// What remove does up to the end, for a backup nothing builds on.
	if err := store.BeginRemoval(store.Backups[0], nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	hidden := filepath.Join(dir, "."+names[0]+".partial")
	if err := os.Rename(filepath.Join(dir, names[0]), hidden); err != nil {
		t.Fatal(err)
	}
	unlock()
	if got := verifyAll(t, dir); len(got) != 1 || got[0] != names[1] {
		t.Fatalf("listed %v", got)
	}
	prune(t, dir, Policy{Last: 5})
	for _, left := range []string{hidden, filepath.Join(dir, ".vbackup.removing")} {
		if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", left, err)
		}
	}
	verifyAll(t, dir)
}

// A prune rewrites images in place: it waits for no reader, and no reader
// reads while it runs; each is refused, saying why.
func TestPruneAndReadersExclude(t *testing.T) {
	dir, _ := makeChain(t, []point{{day: "2026-10-30", off: 0, size: 4}, {day: "2026-10-31", off: 8, size: 4}})
	unlock, err := chain.LockReading(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Prune(context.Background(), PruneRequest{Dir: dir, Policy: Policy{Last: 1}, Now: time.Now}, progress.NewNotifier(nil, nil))
	if err == nil || !strings.Contains(err.Error(), "is reading the backups in "+dir) {
		t.Errorf("prune beside a reader: %v", err)
	}
	unlock()
	if got := verifyAll(t, dir); len(got) != 2 {
		t.Errorf("the refused prune changed the folder: %v", got)
	}
	unlock, err = chain.LockRewriting(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	store, _ := chain.Open(dir)
	_, err = Verify(context.Background(), store, "all", func(Checked) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "a prune is rewriting the backups in "+dir) {
		t.Errorf("verify during a prune: %v", err)
	}
}
