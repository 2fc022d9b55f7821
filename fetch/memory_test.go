package fetch

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"vbackup/nbd"
)

// A disk for the memory bound: its size, and the extents a server reports
// in each 1 GiB window of block status, as nbd.Conn.Extents yields them.
type hugeDisk struct {
	name        string
	size        uint64
	incremental bool
	window      func(off uint64, yield func(nbd.Extent, error) bool) bool
}

var hugeDisks = []hugeDisk{
	{"500GiB-full-of-data", 500 << 30, false, func(off uint64, yield func(nbd.Extent, error) bool) bool {
		return yield(nbd.Extent{Offset: off, Length: 1 << 30}, nil)
	}},
	// Every 512 KiB, 64 KiB of data 4 KiB past the start (two clusters):
	// 2097152 extents, 4194304 data clusters.
	{"1TiB-fragmented", 1 << 40, false, func(off uint64, yield func(nbd.Extent, error) bool) bool {
		for o := off; o < off+1<<30; o += 512 << 10 {
			if !yield(nbd.Extent{Offset: o, Length: 4 << 10, Flags: nbd.StateHole | nbd.StateZero}, nil) ||
				!yield(nbd.Extent{Offset: o + 4<<10, Length: 64 << 10}, nil) ||
				!yield(nbd.Extent{Offset: o + 68<<10, Length: 444 << 10, Flags: nbd.StateHole | nbd.StateZero}, nil) {
				return false
			}
		}
		return true
	}},
	// Every 1 MiB, changed: 5000 bytes of data, unaligned, and two
	// clusters that now read as zeroes. 2097152 extents.
	{"1TiB-fragmented-incremental", 1 << 40, true, func(off uint64, yield func(nbd.Extent, error) bool) bool {
		for o := off; o < off+1<<30; o += 1 << 20 {
			if !yield(nbd.Extent{Offset: o + 1000, Length: 5000}, nil) ||
				!yield(nbd.Extent{Offset: o + 128<<10, Length: 128 << 10, Flags: nbd.StateZero}, nil) {
				return false
			}
		}
		return true
	}},
}

func (d hugeDisk) extents(yield func(nbd.Extent, error) bool) {
	for off := uint64(0); off < d.size; off += 1 << 30 {
		if !d.window(off, yield) {
			return
		}
	}
}

// layoutOnly plans d and lays it out in a qcow2 image, as a fetch does,
// copying nothing, and returns the pieces the copy would have been given.
func layoutOnly(tb testing.TB, d hugeDisk, path string, record bool) (int, target) {
	dst, err := newQcow2Target(path, "", d.size, true, record)
	if err != nil {
		tb.Fatal(err)
	}
	pieces := 0
	for _, err := range dst.layout(dst.fit(fromExtents(d.extents, d.incremental))) {
		if err != nil {
			dst.abort()
			tb.Fatal(err)
		}
		pieces++
	}
	if err := dst.finish(); err != nil {
		tb.Fatal(err)
	}
	return pieces, dst
}

// A fetch summed as it writes keeps its layout to be checked, but only up
// to a bound: past it, the layout is dropped and the image is read back.
func TestSummedLayoutMemoryBound(t *testing.T) {
	d := hugeDisks[1] // 1 TiB fragmented: 2097152 runs of data
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, dst := layoutOnly(t, d, filepath.Join(t.TempDir(), "huge.qcow2"), true)
	runtime.ReadMemStats(&m1)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 48<<20 {
		t.Errorf("allocated %d bytes keeping the layout of %s; want under 48 MiB", alloc, d.name)
	}
	if runs, ok := dst.placements(); ok || runs != nil {
		t.Errorf("%s: a layout of %d runs kept, want it dropped past %d", d.name, len(runs), maxPlacements)
	}
	_, dst = layoutOnly(t, hugeDisks[0], filepath.Join(t.TempDir(), "full.qcow2"), true)
	if runs, ok := dst.placements(); !ok || len(runs) == 0 {
		t.Errorf("%s: no layout kept (%v)", hugeDisks[0].name, ok)
	}
}

// Planning and laying out a disk of any size, however fragmented, takes
// memory for a few clusters (the L2 table being filled, the refcount
// block being written, the header), not for each extent or cluster: the
// bound that lets a fetch run in Buffers × Request plus a constant.
func TestPlanMemoryBound(t *testing.T) {
	for _, d := range hugeDisks {
		t.Run(d.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "huge.qcow2")
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			pieces, _ := layoutOnly(t, d, path, false)
			runtime.ReadMemStats(&m1)
			alloc := m1.TotalAlloc - m0.TotalAlloc
			t.Logf("%s: %d pieces to copy; %d bytes in %d objects allocated", d.name, pieces, alloc, m1.Mallocs-m0.Mallocs)
			if alloc > 1<<20 {
				t.Errorf("allocated %d bytes; want under 1 MiB whatever the disk's size", alloc)
			}
			if _, err := exec.LookPath("qemu-img"); err == nil {
				out, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
				if !strings.Contains(string(out), "No errors were found") {
					t.Errorf("qemu-img check: %s", out)
				}
			}
		})
	}
}

// BenchmarkPlan reports what planning and laying out each huge disk
// allocates (B/op, allocs/op), and the pieces it makes.
func BenchmarkPlan(b *testing.B) {
	for _, d := range hugeDisks {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			var pieces int
			for b.Loop() {
				pieces, _ = layoutOnly(b, d, filepath.Join(b.TempDir(), "huge.qcow2"), false)
			}
			b.ReportMetric(float64(pieces), "pieces/op")
		})
	}
}
