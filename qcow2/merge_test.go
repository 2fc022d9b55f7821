package qcow2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"vbackup/internal/testbed"
)

// overKinds is an overlay's clusters over mixedKinds: over its data, its
// holes, across the region boundary, zero clusters over data.
func overKinds() map[uint64]kind {
	cycle := []kind{random, text, zeroed, repeated, hole, text, zeroData}
	m := map[uint64]kind{}
	for _, span := range [][2]uint64{{100, 220}, {8190, 8200}, {9000, 9010}} {
		for i := span[0]; i < span[1]; i++ {
			if k := cycle[i%uint64(len(cycle))]; k != hole {
				m[i] = k
			}
		}
	}
	return m
}

// rawOf is what the chain of image reads, as a raw file.
func rawOf(t *testing.T, image string) string {
	t.Helper()
	raw := image + ".raw"
	testbed.Run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
	return raw
}

func sameAs(t *testing.T, image, raw string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, raw).CombinedOutput(); err != nil {
		t.Fatalf("%s does not read as before: %v\n%s", image, err, out)
	}
}

func stored(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Blocks) * 512
}

// A compressed overlay committed into a compressed full, as prune removes
// the oldest full: the full then reads as the overlay did, clean, its
// clusters still compressed, grown by no more than the overlay's size.
func TestMoveOver(t *testing.T) {
	needQemu(t)
	for _, c := range []string{"zstd", "zlib"} {
		t.Run(c, func(t *testing.T) {
			dir := t.TempDir()
			base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
			writeCompressed(t, base, mixedSize, mixedKinds(), Options{Compression: c})
			writeCompressed(t, top, mixedSize, overKinds(), Options{Compression: c, Backing: "base.qcow2", BackingFormat: "qcow2"})
			want := rawOf(t, top)
			before, overlay := stored(t, base), stored(t, top)
			res, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true})
			if err != nil {
				t.Fatal(err)
			}
			sameAs(t, base, want)
			sameAs(t, top, want)
			r := qemuCheck(t, base)
			if res.Compressed == 0 || r.CompressedClusters < int(res.Compressed) {
				t.Errorf("moved %+v; the image holds %d compressed clusters", res, r.CompressedClusters)
			}
			if after := stored(t, base); after > before+overlay {
				t.Errorf("the full grew from %d to %d bytes: more than the overlay's %d", before, after, overlay)
			}
		})
	}
}

// Compressed clusters replaced where each host cluster holds many, of
// which some stay: their refcounts go down without reaching 0, and are
// written all the same. The base is written in guest order, one cluster
// after another, so that every host cluster holds both clusters the
// overlay replaces and clusters it keeps; written concurrently, a host
// cluster can hold replaced clusters alone and rightly be freed.
func TestMoveOverShared(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	all, half := map[uint64]kind{}, map[uint64]kind{}
	for i := range uint64(256) {
		all[i] = repeated
		if i%2 == 0 {
			half[i] = text
		}
	}
	writeInOrder(t, base, 64<<20, all, Options{Compression: "zstd"})
	writeCompressed(t, top, 64<<20, half, Options{Compression: "zstd", Backing: "base.qcow2", BackingFormat: "qcow2"})
	want := rawOf(t, top)
	res, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Freed != 0 {
		t.Errorf("moved %+v: freed host clusters, want none", res)
	}
	sameAs(t, base, want)
	qemuCheck(t, base)
}

// writeInOrder writes kinds' data clusters one after another in guest
// order, so their compressed forms lie in the file in that order.
func writeInOrder(t *testing.T, path string, size uint64, kinds map[uint64]kind, opts Options) {
	t.Helper()
	w, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range sortedIndices(kinds, size) {
		if _, err := w.AddData(i, 1); err != nil {
			w.Abort()
			t.Fatal(err)
		}
		if err := w.WriteClusters(i, dataOf(kinds[i], i, size)); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A destination whose file ends just before 2 GiB: the clusters moved go
// past it, where a new refcount block has to count them (and itself).
func TestMoveNewRefcountBlock(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	writePlain(t, base, mixedSize, mixedKinds(), Options{})
	// What lies past the last cluster counted is free space of the image.
	if err := os.Truncate(base, refcountEntries*ClusterSize-3*ClusterSize); err != nil {
		t.Fatal(err)
	}
	writeCompressed(t, top, mixedSize, overKinds(), Options{Compression: "zlib", Backing: "base.qcow2", BackingFormat: "qcow2"})
	want := rawOf(t, top)
	if _, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true}); err != nil {
		t.Fatal(err)
	}
	sameAs(t, base, want)
	qemuCheck(t, base)
	if fi, err := os.Stat(base); err != nil || fi.Size() <= refcountEntries*ClusterSize {
		t.Fatalf("the image did not grow past 2 GiB: %v %v", fi.Size(), err)
	}
}

// A plain full (compression type zlib, qcow2's default, but no compressed
// cluster) takes a zstd overlay: it becomes a zstd image, its clusters
// compressed as they were.
func TestMoveAdoptsCompression(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	writePlain(t, base, mixedSize, mixedKinds(), Options{})
	writeCompressed(t, top, mixedSize, overKinds(), Options{Compression: "zstd", Backing: "base.qcow2", BackingFormat: "qcow2"})
	want := rawOf(t, top)
	res, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true})
	if err != nil {
		t.Fatal(err)
	}
	sameAs(t, base, want)
	if r := qemuCheck(t, base); r.CompressedClusters != int(res.Compressed) || res.Compressed == 0 {
		t.Errorf("moved %+v: %d compressed clusters", res, r.CompressedClusters)
	}
	if c := compressionType(t, base); c != "zstd" {
		t.Errorf("compression type %s, want zstd", c)
	}
}

// QEMU's own compressed images (qemu-img convert -c) and plain ones
// written by qemu-io, zero writes included.
func TestMoveQemuImages(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	writePlain(t, filepath.Join(dir, "src.qcow2"), mixedSize, mixedKinds(), Options{})
	testbed.Run(t, "qemu-img", "convert", "-c", "-f", "qcow2", "-O", "qcow2", filepath.Join(dir, "src.qcow2"), base)
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", top)
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 7M 1M", "-c", "write -P 0x33 511M 2M", top)
	want := rawOf(t, top)
	if _, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true}); err != nil {
		t.Fatal(err)
	}
	sameAs(t, base, want)
	if r := qemuCheck(t, base); r.CompressedClusters == 0 {
		t.Error("no compressed cluster left")
	}
}

// A middle layer copied up into the one above, which is then rebased onto
// the one below: it reads as before, clean; what it held is kept.
func TestMoveUp(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	writePlain(t, base, mixedSize, mixedKinds(), Options{})
	writeCompressed(t, mid, mixedSize, overKinds(), Options{Compression: "zstd", Backing: "base.qcow2", BackingFormat: "qcow2"})
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", "-F", "qcow2", "-b", "mid.qcow2", top)
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 6500k 1M", "-c", "write -z 10M 64k", top)
	want := rawOf(t, top)
	res, err := MoveClusters(context.Background(), Move{Src: mid, Dst: top})
	if err != nil {
		t.Fatal(err)
	}
	testbed.Run(t, "qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2", top)
	sameAs(t, top, want)
	if r := qemuCheck(t, top); res.Compressed == 0 || r.CompressedClusters != int(res.Compressed) {
		t.Errorf("moved %+v; the image holds %d compressed clusters", res, r.CompressedClusters)
	}
	// Again: nothing left to move.
	if res, err := MoveClusters(context.Background(), Move{Src: mid, Dst: top}); err != nil || res.Clusters != 0 {
		t.Errorf("a second move: %+v %v", res, err)
	}
}

// Stopped after each step, as a crash stops it: the chain reads as
// before, the image is not corrupt (leaks at most), and the move done
// again completes it, clean.
func TestMoveStopped(t *testing.T) {
	needQemu(t)
	crash := errors.New("crash")
	for _, step := range []string{"written", "mapped", "freed"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
			writeCompressed(t, base, mixedSize, mixedKinds(), Options{Compression: "zstd"})
			writeCompressed(t, top, mixedSize, overKinds(), Options{Compression: "zstd", Backing: "base.qcow2", BackingFormat: "qcow2"})
			want := rawOf(t, top)
			_, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true, Step: func(s string) error {
				if s == step {
					return crash
				}
				return nil
			}})
			if !errors.Is(err, crash) {
				t.Fatalf("stopped at %s: %v", step, err)
			}
			sameAs(t, top, want)
			out, _ := exec.Command("qemu-img", "check", base).CombinedOutput()
			if bytes.Contains(out, []byte("ERROR")) {
				t.Fatalf("after a stop at %s: %s", step, out)
			}
			if _, err := MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true}); err != nil {
				t.Fatal(err)
			}
			sameAs(t, base, want)
			if out, err := exec.Command("qemu-img", "check", base).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("leaked clusters")) {
				t.Fatalf("after the move done again: %v %s", err, out)
			}
		})
	}
}

// Images it does not handle are refused before anything is written.
func TestMoveRefuses(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	zs, zl, v2 := filepath.Join(dir, "zs.qcow2"), filepath.Join(dir, "zl.qcow2"), filepath.Join(dir, "v2.qcow2")
	writeCompressed(t, zl, mixedSize, mixedKinds(), Options{Compression: "zlib"})
	writeCompressed(t, zs, mixedSize, overKinds(), Options{Compression: "zstd", Backing: "zl.qcow2", BackingFormat: "qcow2"})
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "600M")
	for _, m := range []Move{{Src: zs, Dst: zl, Over: true}, {Src: zs, Dst: v2, Over: true}} {
		before, _ := os.ReadFile(m.Dst)
		_, err := MoveClusters(context.Background(), m)
		var u *UnsupportedError
		if !errors.As(err, &u) {
			t.Errorf("%s into %s: %v, want it refused", m.Src, m.Dst, err)
		}
		if after, _ := os.ReadFile(m.Dst); !bytes.Equal(before, after) {
			t.Errorf("%s changed", m.Dst)
		}
	}
}

// The rolling chain's commit: an uncompressed overlay's data over the
// full's own data clusters is written in place, so the full neither grows
// nor frees anything, and a commit stopped after its writes leaves the
// overlay reading as before over it.
func TestMoveOverInPlace(t *testing.T) {
	needQemu(t)
	all, some := map[uint64]kind{}, map[uint64]kind{}
	for i := range uint64(1024) {
		all[i] = random
		if i%3 == 0 {
			some[i] = text
		}
	}
	crash := errors.New("crash")
	for _, stopAt := range []string{"", "written"} {
		t.Run("stop="+stopAt, func(t *testing.T) {
			dir := t.TempDir()
			base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
			writePlain(t, base, 64<<20, all, Options{})
			writePlain(t, top, 64<<20, some, Options{Backing: "base.qcow2", BackingFormat: "qcow2"})
			want := rawOf(t, top)
			size := func() int64 {
				fi, err := os.Stat(base)
				if err != nil {
					t.Fatal(err)
				}
				return fi.Size()
			}
			before := size()
			m := Move{Src: top, Dst: base, Over: true}
			if stopAt != "" {
				m.Step = func(s string) error {
					if s == stopAt {
						return crash
					}
					return nil
				}
			}
			res, err := MoveClusters(context.Background(), m)
			if stopAt != "" {
				if !errors.Is(err, crash) {
					t.Fatalf("got %v, want the stop", err)
				}
				sameAs(t, top, want)
				qemuCheck(t, base)
				// Done again, as the next prune does.
				res, err = MoveClusters(context.Background(), Move{Src: top, Dst: base, Over: true})
			}
			if err != nil {
				t.Fatal(err)
			}
			sameAs(t, base, want)
			qemuCheck(t, base)
			if after := size(); after != before || res.Freed != 0 || res.Stored != 0 {
				t.Errorf("moved %+v; the full's file went from %d to %d bytes, want it written in place", res, before, after)
			}
			if res.Clusters != uint64(len(some)) {
				t.Errorf("moved %d clusters, want %d", res.Clusters, len(some))
			}
		})
	}
}

// Only a data cluster of the image's own is written in place: an L2 entry
// that points at metadata (as a corrupt one could) is not trusted.
func TestOwnData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "full.qcow2")
	writePlain(t, path, 64<<20, map[uint64]kind{0: random, 1: text}, Options{})
	im, err := openImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer im.f.Close()
	l2 := make([]byte, ClusterSize)
	l2Off, err := im.l2(0, l2)
	if err != nil {
		t.Fatal(err)
	}
	data := binary.BigEndian.Uint64(l2) & hostOffsetMask
	for _, c := range []struct {
		what string
		off  uint64
		want bool
	}{
		{"guest cluster 0's data", data, true},
		{"the header", 0, false},
		{"the L1 table", im.l1Off, false},
		{"the L2 table", l2Off, false},
		{"the refcount table", im.rtOff, false},
		{"a refcount block", im.rt[0] & hostOffsetMask, false},
		{"an unaligned offset", data + 512, false},
		{"past the file's end", im.next * ClusterSize, false},
	} {
		if got := im.ownData(c.off); got != c.want {
			t.Errorf("%s (%d): ownData %v, want %v", c.what, c.off, got, c.want)
		}
	}
}
