package qcow2

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"vbackup/internal/testbed"
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

// Laying out and writing a compressed 1 TiB disk in 16384 runs across
// all its L2 regions, the data of every other run arriving 300 runs after
// the layout (once its region's table is on disk), allocates a few
// clusters' worth of buffers too.
func TestCompressedHugeFragmentedMemory(t *testing.T) {
	needQemu(t)
	const size, every = 1 << 40, 1024
	zeros := make([]byte, 3*ClusterSize)
	txt, rnd := content(text, 1), content(random, 2)
	for _, compression := range []string{"zlib", "zstd"} {
		t.Run(compression, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "huge.qcow2")
			cd, _ := newCodec(compression)
			for range runtime.GOMAXPROCS(0) + 1 { // the codec's tables, made once per process
				cd.compress(make([]byte, 0, 2*ClusterSize), txt, ClusterSize)
			}
			type run struct{ first, n uint64 }
			var lag [300]run
			b0, o0 := heapAllocated()
			w, err := Create(p, size, Options{Compression: compression})
			if err != nil {
				t.Fatal(err)
			}
			write := func(r run) error {
				switch {
				case r.first%(50*every) == 0:
					return w.WriteClusters(r.first, txt)
				case r.first%(51*every) == 0:
					return w.WriteClusters(r.first, rnd)
				}
				return w.WriteClusters(r.first, zeros[:r.n*ClusterSize])
			}
			runs, lagged := 0, 0
			for g := uint64(0); g < size/ClusterSize/every; g++ {
				r := run{g * every, 1 + g%3}
				if r.first%(50*every) == 0 || r.first%(51*every) == 0 {
					r.n = 1
				}
				if _, err := w.AddData(r.first, r.n); err != nil { // a run of 3 or fewer never crosses a region
					t.Fatal(err)
				}
				runs++
				if g%2 == 0 {
					if err := write(r); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if lagged >= len(lag) {
					if err := write(lag[lagged%len(lag)]); err != nil {
						t.Fatal(err)
					}
				}
				lag[lagged%len(lag)] = r
				lagged++
			}
			for i := max(0, lagged-len(lag)); i < lagged; i++ {
				if err := write(lag[i%len(lag)]); err != nil {
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
			r := qemuCheck(t, p)
			if want := int(size / ClusterSize / every / 50); r.CompressedClusters < want {
				t.Errorf("%d compressed clusters, want %d or more", r.CompressedClusters, want)
			}
			qemuRead(t, p, 0, ClusterSize, 63*ClusterSize)
			out := testbed.Run(t, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -v %d 16", uint64(50*every*7)*ClusterSize), p)
			if !strings.Contains(out, fmt.Sprintf("% x", txt[:16])) {
				t.Errorf("qemu-io read of a compressed cluster: %s", out)
			}
		})
	}
}
