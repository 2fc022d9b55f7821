package engine

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/qcow2"
)

const mib = 1 << 20

// writeCompressedPoint writes point i's image of a 64 MiB disk as a
// compressed backup is written (qcow2.Writer, as fetch does): the point's
// range, each cluster half random and half zeroes, so it compresses to
// about half; over prev's image unless prev is "".
func writeCompressedPoint(t *testing.T, img, prev string, i int, p point, compress string) {
	t.Helper()
	opts := qcow2.Options{Compression: compress}
	if prev != "" {
		opts.Backing, opts.BackingFormat = "../"+prev+"/vda.qcow2", "qcow2"
	}
	w, err := qcow2.Create(img, 64*mib, opts)
	if err != nil {
		t.Fatal(err)
	}
	first, count := uint64(p.off)*mib/qcow2.ClusterSize, uint64(p.size)*mib/qcow2.ClusterSize
	for added := uint64(0); added < count; {
		n, err := w.AddData(first+added, count-added)
		if err != nil {
			t.Fatal(err)
		}
		added += n
	}
	r := rand.New(rand.NewPCG(uint64(i), 7))
	data := make([]byte, qcow2.ClusterSize)
	for c := first; c < first+count; c++ {
		for k := 0; k < len(data)/2; k += 8 {
			binary.LittleEndian.PutUint64(data[k:], r.Uint64())
		}
		if err := w.WriteClusters(c, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// rawPoints saves what each backup of dir reads, as raw files.
func rawPoints(t *testing.T, dir string, names []string) map[string]string {
	t.Helper()
	raws := map[string]string{}
	tmp := t.TempDir()
	for _, n := range names {
		raws[n] = filepath.Join(tmp, n+".raw")
		run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", filepath.Join(dir, n, "vda.qcow2"), raws[n])
	}
	return raws
}

// sameAsBefore checks that each listed backup reads as it did.
func sameAsBefore(t *testing.T, dir string, names []string, raws map[string]string) {
	t.Helper()
	for _, n := range names {
		if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", filepath.Join(dir, n, "vda.qcow2"), raws[n]).CombinedOutput(); err != nil {
			t.Errorf("backup %s does not read as before: %v %s", n, err, out)
		}
	}
}

type checked struct {
	Leaks              int `json:"leaks"`
	Corruptions        int `json:"corruptions"`
	CheckErrors        int `json:"check-errors"`
	CompressedClusters int `json:"compressed-clusters"`
}

// imageCheck is qemu-img check of img; an error or corruption fails t,
// and so do leaks unless leaksOK (what a crash may leave).
func imageCheck(t *testing.T, img string, leaksOK bool) checked {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "--output=json", img).Output()
	var c checked
	if jerr := json.Unmarshal(out, &c); jerr != nil {
		t.Fatalf("qemu-img check %s: %v %v %s", img, err, jerr, out)
	}
	if c.Corruptions != 0 || c.CheckErrors != 0 || (c.Leaks != 0 && !leaksOK) || (err != nil && !leaksOK) {
		t.Errorf("qemu-img check %s: %v %s", img, err, out)
	}
	return c
}

func stored(t *testing.T, img string) uint64 {
	t.Helper()
	if _, err := os.Stat(img); err != nil {
		t.Fatal(err)
	}
	return storedBytes(img)
}

// A compressed folder stays compressed as prune merges: the oldest full
// twice into the next point, then a middle point up into the next. Every
// kept point reads as before, its image is clean, and a merged image grows
// by the compressed size of what moved into it (qemu-img commit and
// rebase store it uncompressed: about twice as much here).
func TestPruneKeepsCompression(t *testing.T) {
	for _, compress := range []string{"zstd", "zlib"} {
		t.Run(compress, func(t *testing.T) {
			dir, names := makeChainOf(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8}, {day: "2026-10-31", off: 20, size: 4},
				{day: "2026-11-01", off: 4, size: 4}, {day: "2026-11-02", off: 30, size: 2}}, compress)
			raws := rawPoints(t, dir, names)
			img := func(i int) string { return filepath.Join(dir, names[i], "vda.qcow2") }
			var size []uint64
			for i := range names {
				size = append(size, stored(t, img(i)))
			}
			var said lines
			if _, err := Prune(t.Context(), PruneRequest{Dir: dir, Policy: Policy{Last: 3}, Now: time.Now}, &said); err != nil {
				t.Fatal(err)
			}
			if said.all() != "" {
				t.Errorf("said %q", said.all())
			}
			verifyAll(t, dir)
			sameAsBefore(t, dir, names[2:], raws)
			for i := 2; i < len(names); i++ {
				if c := imageCheck(t, img(i), false); c.CompressedClusters == 0 {
					t.Errorf("%s holds no compressed cluster", img(i))
				}
			}
			// names[2]'s image is now names[0]'s full, holding 20 MiB of data
			// that compresses to about half.
			merged := stored(t, img(2))
			t.Logf("stored: %v; the merged full: %d", size, merged)
			if moved := size[1] + size[2]; merged > size[0]+moved+2*qcow2.ClusterSize {
				t.Errorf("the full grew from %d to %d bytes, more than the %d bytes of compressed data moved into it", size[0], merged, moved)
			}
			if merged > 12*mib {
				t.Errorf("the merged full holds 20 MiB of data that compresses to half in %d bytes", merged)
			}

			res, err := Prune(t.Context(), PruneRequest{Dir: dir, Policy: Policy{Monthly: 2}, Now: time.Now}, &said)
			if err != nil || len(res.Merges) != 1 || res.Merges[0].Down {
				t.Fatalf("%+v %v", res, err)
			}
			kept := []string{names[2], names[4]}
			if got := verifyAll(t, dir); strings.Join(got, " ") != strings.Join(kept, " ") {
				t.Fatalf("kept %v", got)
			}
			sameAsBefore(t, dir, kept, raws)
			imageCheck(t, img(2), false)
			imageCheck(t, img(4), false)
			t.Logf("%s: %d, was %d", names[4], stored(t, img(4)), size[4])
			if grown := stored(t, img(4)) - size[4]; grown > size[3]+2*qcow2.ClusterSize {
				t.Errorf("%s grew by %d bytes, more than the %d bytes of compressed data moved into it", names[4], grown, size[3])
			}
		})
	}
}

// A prune of a compressed folder stopped at any step of its merges (the
// cluster mover's inside too) leaves every listed point reading as before
// and verifiable, its images leaking at most; the next prune completes it.
func TestPruneCompressedStoppedAnywhere(t *testing.T) {
	crash := errors.New("crash")
	for _, step := range []string{"commit written", "commit mapped", "commit freed", "committed", "rewritten as full",
		"rebase written", "rebase mapped", "rebased"} {
		t.Run(step, func(t *testing.T) {
			dir, names := makeChainOf(t, []point{{day: "2026-10-30", off: 0, size: 16}, {day: "2026-10-31", off: 8, size: 8},
				{day: "2026-11-01", off: 20, size: 4}, {day: "2026-11-02", off: 2, size: 4}}, "zstd")
			raws := rawPoints(t, dir, names)
			policy := Policy{Last: 2}
			if strings.HasPrefix(step, "rebase") {
				policy = Policy{Monthly: 2}
			}
			stop = func(s string) error {
				if s == step {
					return crash
				}
				return nil
			}
			_, err := Prune(t.Context(), PruneRequest{Dir: dir, Policy: policy, Now: time.Now}, &lines{})
			stop = func(string) error { return nil }
			if !errors.Is(err, crash) {
				t.Fatalf("prune stopped at %s: %v", step, err)
			}
			listed := verifyAll(t, dir)
			sameAsBefore(t, dir, listed, raws)
			for _, n := range listed {
				imageCheck(t, filepath.Join(dir, n, "vda.qcow2"), true)
			}
			var said lines
			if _, err := Prune(t.Context(), PruneRequest{Dir: dir, Policy: policy, Now: time.Now}, &said); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(said.all(), "completing the removal of backup") {
				t.Errorf("said %q", said.all())
			}
			listed = verifyAll(t, dir)
			sameAsBefore(t, dir, listed, raws)
			for _, n := range listed {
				if c := imageCheck(t, filepath.Join(dir, n, "vda.qcow2"), true); c.CompressedClusters == 0 {
					t.Errorf("%s holds no compressed cluster", n)
				}
			}
		})
	}
}

// An image the cluster mover does not handle (here a qcow2 v2 full) is
// merged by qemu-img, and the output says so; every kept point still
// verifies.
func TestPruneFallsBackToQemuImg(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-30", off: 0, size: 8}, {day: "2026-10-31", off: 4, size: 4}, {day: "2026-11-01", off: 12, size: 2}})
	run(t, "qemu-img", "amend", "-f", "qcow2", "-o", "compat=0.10", filepath.Join(dir, names[0], "vda.qcow2"))
	raws := rawPoints(t, dir, names)
	var said lines
	if _, err := Prune(t.Context(), PruneRequest{Dir: dir, Policy: Policy{Last: 2}, Now: time.Now}, &said); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(said.all(), "qcow2 version 2 (compat=0.10), which vbackup's cluster mover does not handle; merging with qemu-img commit instead") {
		t.Errorf("said %q", said.all())
	}
	verifyAll(t, dir)
	sameAsBefore(t, dir, names[1:], raws)
}
