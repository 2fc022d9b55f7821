package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"vbackup/internal/testbed"
)

func TestEmpty(t *testing.T) {
	needQemu(t)
	for _, size := range []uint64{0, 512, 1 << 30} {
		p := filepath.Join(t.TempDir(), "e.qcow2")
		build(t, p, size, nil, nil, Options{})
		checkImage(t, p, size, "")
		if size > 0 {
			qemuRead(t, p, 0, 0, size)
		}
	}
}

func TestScatteredLarge(t *testing.T) {
	needQemu(t)
	const size = 5<<30 + 3*512 // > 4 GiB, not cluster aligned
	// 8191..8193 and 65535..65536 cross L2 regions within one run.
	idx := []uint64{0, 1, 2, 100, 8191, 8192, 8193, 20000, 40000, 65535, 65536, 81919, 81920}
	var clusters []cluster
	want := map[uint64]byte{}
	for _, i := range idx {
		clusters = append(clusters, cluster{index: i})
		want[i] = patByte(i)
	}
	p := filepath.Join(t.TempDir(), "s.qcow2")
	build(t, p, size, clusters, idx, Options{})
	checkImage(t, p, size, "")
	for _, i := range idx {
		qemuRead(t, p, patByte(i), i*ClusterSize, min(ClusterSize, size-i*ClusterSize))
	}
	qemuRead(t, p, 0, 3*ClusterSize, 97*ClusterSize)
	qemuRead(t, p, 0, 65537*ClusterSize, (81919-65537)*ClusterSize)
	compareRaw(t, p, size, want)
}

// A run of data clusters is adjacent on the host within a 512 MiB region;
// the next region's L2 table comes between.
func TestAddStopsAtRegion(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "r.qcow2"), 2<<30, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	h1, n1, err := w.Add(l2Entries-2, 5)
	if err != nil || n1 != 2 {
		t.Fatalf("Add across a region: %d clusters, %v; want 2", n1, err)
	}
	h2, n2, err := w.Add(l2Entries, 3)
	if err != nil || n2 != 3 {
		t.Fatalf("Add of the rest: %d clusters, %v; want 3", n2, err)
	}
	if h2 != h1+3*ClusterSize {
		t.Errorf("second run at %d, want %d (after the first and one L2 table)", h2, h1+3*ClusterSize)
	}
}

// TestManyRefcountBlocks lays out 40000 data clusters (> 32768 host
// clusters, so two refcount blocks) and writes every 37th; the rest stay
// sparse zeroes.
func TestManyRefcountBlocks(t *testing.T) {
	needQemu(t)
	const n = 40000
	const size = 3 << 30
	var clusters []cluster
	var write []uint64
	want := map[uint64]byte{}
	for i := range uint64(n) {
		g := i + i/5 // leave holes
		clusters = append(clusters, cluster{index: g})
		if i%37 == 0 || i == n-1 {
			write = append(write, g)
			want[g] = patByte(g)
		}
	}
	p := filepath.Join(t.TempDir(), "m.qcow2")
	w := build(t, p, size, clusters, write, Options{})
	if w.rbCount < 2 {
		t.Fatalf("refcount blocks %d, want >= 2", w.rbCount)
	}
	checkImage(t, p, size, "")
	last := clusters[n-1].index
	qemuRead(t, p, patByte(last), last*ClusterSize, ClusterSize)
	compareRaw(t, p, size, want)
}

func TestZeroOverBacking(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	const size = 640 << 20
	// Backing: clusters 0..99 and 8180..8199 hold per-cluster patterns.
	var bcl []cluster
	var bidx []uint64
	for i := uint64(0); i < 8200; i++ {
		if i < 100 || i >= 8180 {
			bcl = append(bcl, cluster{index: i})
			bidx = append(bidx, i)
		}
	}
	backing := filepath.Join(dir, "base.qcow2")
	build(t, backing, size, bcl, bidx, Options{})
	checkImage(t, backing, size, "")

	// Overlay: zero clusters, data clusters, and clusters not added mixed;
	// 8190..8193 is a run of zero clusters across two L2 regions.
	zero := map[uint64]bool{3: true, 4: true, 50: true, 8185: true, 8190: true, 8191: true, 8192: true, 8193: true, 8195: true, 9500: true}
	data := []uint64{5, 51, 8186, 9000}
	var cl []cluster
	for i := uint64(0); i < 10240; i++ {
		if zero[i] {
			cl = append(cl, cluster{index: i, zero: true})
		} else if slices.Contains(data, i) {
			cl = append(cl, cluster{index: i})
		}
	}
	over := filepath.Join(dir, "over.qcow2")
	build(t, over, size, cl, data, Options{Backing: "base.qcow2", BackingFormat: "qcow2"})
	checkImage(t, over, size, "base.qcow2")

	want := map[uint64]byte{}
	for _, i := range bidx {
		want[i] = patByte(i)
	}
	for i := range zero {
		want[i] = 0
	}
	for _, i := range data {
		want[i] = patByte(i)
	}
	for _, i := range []uint64{2, 3, 4, 5, 6, 49, 50, 51, 52, 8184, 8185, 8186, 8190, 8191, 8192, 8193, 8194, 8195, 8196, 9000, 9500} {
		qemuRead(t, over, want[i], i*ClusterSize, ClusterSize)
	}
	compareRaw(t, over, size, want)

	// Full-content check through qemu-img convert.
	raw := filepath.Join(dir, "over.raw")
	testbed.Run(t, "qemu-img", "convert", "-O", "raw", over, raw)
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < uint64(len(got))/ClusterSize; i++ {
		c := got[i*ClusterSize : (i+1)*ClusterSize]
		if !bytes.Equal(c, bytes.Repeat([]byte{want[i]}, ClusterSize)) {
			t.Fatalf("cluster %d differs", i)
		}
	}
}

// Data is written by many goroutines, in any order, while later clusters
// are still being added, as a copy does.
func TestConcurrent(t *testing.T) {
	needQemu(t)
	const size = 2 << 30
	p := filepath.Join(t.TempDir(), "c.qcow2")
	w, err := Create(p, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	type job struct{ index, host uint64 }
	jobs := make(chan job, 64)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for j := range jobs {
				if _, err := w.WriteAt(pattern(j.index), int64(j.host)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	want := map[uint64]byte{}
	for i := uint64(0); i < 32768; i += 9 {
		if i%4 == 0 {
			if err := w.AddZero(i, 1); err != nil {
				t.Fatal(err)
			}
			continue
		}
		host, _, err := w.Add(i, 1)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = patByte(i)
		jobs <- job{i, host}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkImage(t, p, size, "")
	compareRaw(t, p, size, want)
}

func TestWriteAtAndErrors(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "w.qcow2")
	w, err := Create(p, 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(p, 1<<20, Options{}); err == nil {
		t.Fatal("Create over existing file succeeded")
	}
	host := addAll(t, w, []cluster{{index: 1}, {index: 2}, {index: 3}, {index: 4, zero: true}})
	for _, bad := range []struct {
		index, count uint64
		zero         bool
	}{{3, 1, false}, {4, 1, true}, {0, 1, false}, {5, 0, false}, {15, 2, false}, {16, 1, true}} {
		var err error
		if bad.zero {
			err = w.AddZero(bad.index, bad.count)
		} else {
			_, _, err = w.Add(bad.index, bad.count)
		}
		if err == nil {
			t.Errorf("adding %d clusters at %d (zero %v) after cluster 4 succeeded", bad.count, bad.index, bad.zero)
		}
	}
	buf := append(append(pattern(1), pattern(2)...), pattern(3)...)
	if _, err := w.WriteAt(buf, int64(host[1])); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		off int64
		n   int
	}{{0, ClusterSize}, {ClusterSize, 8}, {int64(host[3]), 2 * ClusterSize}} { // header, L1 table, beyond the layout
		if _, err := w.WriteAt(make([]byte, bad.n), bad.off); err == nil {
			t.Errorf("WriteAt(%d bytes at %d) succeeded", bad.n, bad.off)
		}
	}
	host6, _, err := w.Add(6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(pattern(6)[:100], int64(host6)); err != nil { // a partial cluster: the rest reads as zeroes
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("a second Close succeeded")
	}
	checkImage(t, p, 1<<20, "")
	qemuRead(t, p, 0, 0, ClusterSize)
	for i := uint64(1); i < 4; i++ {
		qemuRead(t, p, patByte(i), i*ClusterSize, ClusterSize)
	}
	qemuRead(t, p, 0, 4*ClusterSize, 2*ClusterSize)
	qemuRead(t, p, patByte(6), 6*ClusterSize, 100)
	qemuRead(t, p, 0, 6*ClusterSize+100, 10*ClusterSize-100)

	for _, size := range []uint64{1000, 1 << 57} {
		if _, err := Create(filepath.Join(dir, "bad.qcow2"), size, Options{}); err == nil {
			t.Errorf("Create of size %d succeeded", size)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.qcow2")); err == nil {
		t.Error("bad.qcow2 exists")
	}
	w, err = Create(filepath.Join(dir, "abort.qcow2"), 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := os.Stat(filepath.Join(dir, "abort.qcow2")); err == nil {
		t.Error("aborted file exists")
	}
}
