package qcow2

import (
	"path/filepath"
	"runtime"
	"testing"
)

// fragment adds clusters over the whole of a size-byte disk, fragmented:
// every 64 clusters a run of 1 to 3 data clusters, and every fourth time
// a zero cluster after it. It returns the runs added and the host offset of
// the first and last data clusters.
func fragment(w *Writer, size uint64) (runs int, first, last uint64, err error) {
	for g := uint64(0); g*64 < size/ClusterSize; g++ {
		i, n := g*64, 1+g%3
		for n > 0 {
			h, got, err := w.Add(i, n)
			if err != nil {
				return 0, 0, 0, err
			}
			if runs == 0 {
				first = h
			}
			last = h + (got-1)*ClusterSize
			i, n = i+got, n-got
		}
		runs++
		if g%4 == 0 {
			if err := w.AddZero(g*64+5, 1); err != nil {
				return 0, 0, 0, err
			}
			runs++
		}
	}
	return runs, first, last, nil
}

// heapAllocated returns the bytes and objects allocated so far.
func heapAllocated() (bytes, objects uint64) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc, m.Mallocs
}

// Laying out a 1 TiB disk in 327680 runs across all its 2048 L2 regions
// allocates a few clusters' worth of buffers, not memory per cluster or per
// run: the bound that lets a fetch of any disk run in constant memory.
func TestHugeFragmentedMemory(t *testing.T) {
	needQemu(t)
	const size = 1 << 40
	p := filepath.Join(t.TempDir(), "huge.qcow2")
	b0, o0 := heapAllocated()
	w, err := Create(p, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runs, first, last, err := fragment(w, size)
	if err != nil {
		w.Abort()
		t.Fatal(err)
	}
	for _, h := range []uint64{first, last} {
		if _, err := w.WriteAt(pattern(h/ClusterSize), int64(h)); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b1, o1 := heapAllocated()
	t.Logf("1 TiB, %d runs, %d host clusters: %d bytes in %d objects allocated", runs, w.hostClusters, b1-b0, o1-o0)
	if b1-b0 > 1<<20 {
		t.Errorf("allocated %d bytes; want under 1 MiB whatever the disk's size", b1-b0)
	}
	checkImage(t, p, size, "")
	lastGuest := uint64(size/ClusterSize-1) / 64 * 64 // the last group's first cluster
	lastGuest += lastGuest / 64 % 3                   // its run's last
	qemuRead(t, p, patByte(first/ClusterSize), 0, ClusterSize)
	qemuRead(t, p, patByte(last/ClusterSize), lastGuest*ClusterSize, ClusterSize)
	qemuRead(t, p, 0, ClusterSize, 63*ClusterSize) // unwritten data, a zero cluster, clusters not added
}

// BenchmarkLayout1TiB reports what laying out and closing the fragmented
// 1 TiB disk of TestHugeFragmentedMemory allocates (B/op, allocs/op).
func BenchmarkLayout1TiB(b *testing.B) {
	b.ReportAllocs()
	var runs int
	for b.Loop() {
		w, err := Create(filepath.Join(b.TempDir(), "huge.qcow2"), 1<<40, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if runs, _, _, err = fragment(w, 1<<40); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(runs), "runs/op")
}
