package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func needQemu(tb testing.TB) {
	tb.Helper()
	for _, t := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(t); err != nil {
			if os.Getenv("CI") == "true" {
				tb.Fatalf("%s not installed", t)
			}
			tb.Skipf("%s not installed", t)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pattern returns cluster data for index: a byte derived from the index.
func patByte(index uint64) byte { return byte(index*7 + 1) }

func pattern(index uint64) []byte { return bytes.Repeat([]byte{patByte(index)}, ClusterSize) }

type imageInfo struct {
	VirtualSize     uint64 `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	FormatSpecific  struct {
		Data struct {
			Compat string `json:"compat"`
		} `json:"data"`
	} `json:"format-specific"`
}

// checkImage runs qemu-img check and info and verifies the basic properties.
func checkImage(t *testing.T, path string, size uint64, backing string) {
	t.Helper()
	out := run(t, "qemu-img", "check", path)
	if !strings.Contains(out, "No errors were found") {
		t.Fatalf("qemu-img check: %s", out)
	}
	var info imageInfo
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != size {
		t.Errorf("virtual size %d, want %d", info.VirtualSize, size)
	}
	if info.FormatSpecific.Data.Compat != "1.1" {
		t.Errorf("compat %q, want 1.1", info.FormatSpecific.Data.Compat)
	}
	if info.BackingFilename != backing {
		t.Errorf("backing %q, want %q", info.BackingFilename, backing)
	}
	if backing != "" && info.BackingFormat != "qcow2" {
		t.Errorf("backing format %q", info.BackingFormat)
	}
}

// qemuRead checks with qemu-io that [off, off+n) of the image reads as b.
func qemuRead(t *testing.T, path string, b byte, off, n uint64) {
	t.Helper()
	out := run(t, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P 0x%02x %d %d", b, off, n), path)
	if strings.Contains(out, "Pattern verification failed") || !strings.Contains(out, "read ") {
		t.Fatalf("read -P 0x%02x %d %d: %s", b, off, n, out)
	}
}

// compareRaw writes a sparse raw file holding want (guest cluster -> byte)
// and runs qemu-img compare against the image.
func compareRaw(t *testing.T, path string, size uint64, want map[uint64]byte) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "want.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	for idx, b := range want {
		if b == 0 {
			continue
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, ClusterSize), int64(idx*ClusterSize)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(size)); err != nil { // drop a partial last cluster's tail
		t.Fatal(err)
	}
	f.Close()
	out := run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, path)
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
}

// build creates an image with the clusters and writes all data clusters
// listed in write with their pattern.
func build(t *testing.T, path string, size uint64, clusters []Cluster, write []uint64, opts Options) {
	t.Helper()
	w, err := Create(path, size, clusters, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range write {
		if err := w.WriteCluster(idx, pattern(idx)); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(st.Size()) != w.HostSize() {
		t.Fatalf("file size %d, want %d", st.Size(), w.HostSize())
	}
}

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
	idx := []uint64{0, 1, 2, 100, 8191, 8192, 8193, 20000, 40000, 65535, 65536, 81919, 81920}
	var clusters []Cluster
	want := map[uint64]byte{}
	for _, i := range idx {
		clusters = append(clusters, Cluster{Index: i})
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

// TestManyRefcountBlocks plans 40000 data clusters (> 32768 host clusters, so
// two refcount blocks) and writes every 37th; the rest stay sparse zeroes.
func TestManyRefcountBlocks(t *testing.T) {
	needQemu(t)
	const n = 40000
	const size = 3 << 30
	var clusters []Cluster
	var write []uint64
	want := map[uint64]byte{}
	for i := range uint64(n) {
		g := i + i/5 // leave holes
		clusters = append(clusters, Cluster{Index: g})
		if i%37 == 0 || i == n-1 {
			write = append(write, g)
			want[g] = patByte(g)
		}
	}
	p := filepath.Join(t.TempDir(), "m.qcow2")
	w, err := Create(p, size, clusters, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if w.rbCount < 2 {
		t.Fatalf("refcount blocks %d, want >= 2", w.rbCount)
	}
	w.Abort()
	build(t, p, size, clusters, write, Options{})
	checkImage(t, p, size, "")
	last := clusters[n-1].Index
	qemuRead(t, p, patByte(last), last*ClusterSize, ClusterSize)
	compareRaw(t, p, size, want)
}

func TestZeroOverBacking(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	const size = 640 << 20
	// Backing: clusters 0..99 and 8180..8199 hold per-cluster patterns.
	var bcl []Cluster
	var bidx []uint64
	for i := uint64(0); i < 8200; i++ {
		if i < 100 || i >= 8180 {
			bcl = append(bcl, Cluster{Index: i})
			bidx = append(bidx, i)
		}
	}
	backing := filepath.Join(dir, "base.qcow2")
	build(t, backing, size, bcl, bidx, Options{})
	checkImage(t, backing, size, "")

	// Overlay: zero clusters, data clusters, and unplanned clusters mixed.
	zero := map[uint64]bool{3: true, 4: true, 50: true, 8185: true, 8195: true, 9500: true}
	data := []uint64{5, 51, 8186, 9000}
	var cl []Cluster
	for i := uint64(0); i < 10240; i++ {
		if zero[i] {
			cl = append(cl, Cluster{Index: i, Zero: true})
		} else if slices.Contains(data, i) {
			cl = append(cl, Cluster{Index: i})
		}
	}
	over := filepath.Join(dir, "over.qcow2")
	build(t, over, size, cl, data, Options{Backing: backing, BackingFormat: "qcow2"})
	checkImage(t, over, size, backing)

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
	for _, i := range []uint64{2, 3, 4, 5, 6, 49, 50, 51, 52, 8184, 8185, 8186, 8191, 8192, 8195, 8196, 9000, 9500} {
		qemuRead(t, over, want[i], i*ClusterSize, ClusterSize)
	}
	compareRaw(t, over, size, want)

	// Full-content check through qemu-img convert.
	raw := filepath.Join(dir, "over.raw")
	run(t, "qemu-img", "convert", "-O", "raw", over, raw)
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

func TestConcurrent(t *testing.T) {
	needQemu(t)
	const size = 2 << 30
	var clusters []Cluster
	var idx []uint64
	want := map[uint64]byte{}
	for i := uint64(0); i < 32768; i += 9 {
		z := i%4 == 0
		clusters = append(clusters, Cluster{Index: i, Zero: z})
		if !z {
			idx = append(idx, i)
			want[i] = patByte(i)
		}
	}
	p := filepath.Join(t.TempDir(), "c.qcow2")
	w, err := Create(p, size, clusters, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			// Each goroutine writes a strided share, in reverse order.
			for k := len(idx) - 1 - g; k >= 0; k -= 32 {
				if err := w.WriteCluster(idx[k], pattern(idx[k])); err != nil {
					errs <- err
					return
				}
			}
		})
	}
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
	clusters := []Cluster{{Index: 1}, {Index: 2}, {Index: 3}, {Index: 4, Zero: true}, {Index: 6}}
	p := filepath.Join(dir, "w.qcow2")
	w, err := Create(p, 1<<20, clusters, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(p, 1<<20, clusters, Options{}); err == nil {
		t.Fatal("Create over existing file succeeded")
	}
	buf := append(append(pattern(1), pattern(2)...), pattern(3)...)
	if err := w.WriteAt(buf, ClusterSize); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		off uint64
		n   int
	}{{0, ClusterSize}, {4 * ClusterSize, ClusterSize}, {3 * ClusterSize, 2 * ClusterSize},
		{5 * ClusterSize, 2 * ClusterSize}, {ClusterSize + 512, ClusterSize}, {ClusterSize, 100}} {
		if err := w.WriteAt(make([]byte, bad.n), bad.off); err == nil {
			t.Errorf("WriteAt(%d bytes at %d) succeeded", bad.n, bad.off)
		}
	}
	if err := w.WriteCluster(6, pattern(6)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkImage(t, p, 1<<20, "")
	compareRaw(t, p, 1<<20, map[uint64]byte{1: patByte(1), 2: patByte(2), 3: patByte(3), 6: patByte(6)})

	for _, c := range [][]Cluster{{{Index: 2}, {Index: 1}}, {{Index: 1}, {Index: 1}}, {{Index: 16}}} {
		if _, err := Create(filepath.Join(dir, "bad.qcow2"), 1<<20, c, Options{}); err == nil {
			t.Errorf("Create with %v succeeded", c)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.qcow2")); err == nil {
		t.Error("bad.qcow2 exists")
	}
	w, err = Create(filepath.Join(dir, "abort.qcow2"), 1<<20, clusters, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := os.Stat(filepath.Join(dir, "abort.qcow2")); err == nil {
		t.Error("aborted file exists")
	}
}

const benchBytes = 1 << 30

// benchWrite writes benchBytes in 1 MiB chunks from 8 goroutines with write.
func benchWrite(b *testing.B, write func(p []byte, off uint64) error) {
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	var wg sync.WaitGroup
	const workers = 8
	for g := range workers {
		wg.Go(func() {
			for off := uint64(g) * uint64(len(chunk)); off < benchBytes; off += workers * uint64(len(chunk)) {
				if err := write(chunk, off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkQcow2Write1GiB(b *testing.B) {
	b.SetBytes(benchBytes)
	clusters := make([]Cluster, benchBytes/ClusterSize)
	for i := range clusters {
		clusters[i].Index = uint64(i)
	}
	for b.Loop() {
		p := filepath.Join(b.TempDir(), "b.qcow2")
		w, err := Create(p, 2*benchBytes, clusters, Options{})
		if err != nil {
			b.Fatal(err)
		}
		benchWrite(b, w.WriteAt)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		os.Remove(p)
	}
}

func BenchmarkRawWrite1GiB(b *testing.B) {
	b.SetBytes(benchBytes)
	for b.Loop() {
		p := filepath.Join(b.TempDir(), "b.raw")
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(2 * benchBytes); err != nil {
			b.Fatal(err)
		}
		benchWrite(b, func(p []byte, off uint64) error { _, err := f.WriteAt(p, int64(off)); return err })
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(p)
	}
}
