package nbd

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// sparseImage makes a 64 MiB qcow2 with data at 1M (1M of 0xab), 10M (64k
// of 0xcd) and 40M (3M of 0x11), zeroes written at 20M, and holes between;
// it returns its path and its contents.
func sparseImage(t *testing.T) (string, []byte) {
	img := filepath.Join(t.TempDir(), "sparse.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	testbed.Run(t, "qemu-io", "-c", "write -P 0xab 1M 1M", "-c", "write -P 0xcd 10M 64k",
		"-c", "write -z 20M 1M", "-c", "write -P 0x11 40M 3M", img)
	want := make([]byte, 64<<20)
	copy(want[1<<20:], bytes.Repeat([]byte{0xab}, 1<<20))
	copy(want[10<<20:], bytes.Repeat([]byte{0xcd}, 64<<10))
	copy(want[40<<20:], bytes.Repeat([]byte{0x11}, 3<<20))
	return img, want
}

// qemuImgMap is `qemu-img map` of img as base:allocation extents.
func qemuImgMap(t *testing.T, img string) []Extent {
	var m []struct {
		Start, Length uint64
		Zero, Data    bool
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "map", "--output=json", img)), &m); err != nil {
		t.Fatal(err)
	}
	var exts []Extent
	for _, e := range m {
		var f uint32
		if !e.Data {
			f |= StateHole
		}
		if e.Zero {
			f |= StateZero
		}
		exts = append(exts, Extent{Offset: e.Start, Length: e.Length, Flags: f})
	}
	return mergeExtents(exts)
}

func TestSparseRead(t *testing.T) {
	img, want := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{})
	p := bytes.Repeat([]byte{0xee}, len(want)) // holes must be zeroed, not left
	holes, err := c.ReadAtSparse(testCtx(t), p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, want) {
		t.Error("ReadAtSparse: wrong data")
	}
	var zeroes []Extent
	for _, e := range qemuImgMap(t, img) {
		if e.Flags&StateZero != 0 {
			zeroes = append(zeroes, Extent{Offset: e.Offset, Length: e.Length, Flags: StateHole | StateZero})
		}
	}
	if !reflect.DeepEqual(holes, mergeExtents(zeroes)) {
		t.Errorf("holes %v;\nqemu-img map's zeroes %v", holes, zeroes)
	}
}

func TestBlockStatusAllocation(t *testing.T) {
	img, _ := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation}})
	ctx := testCtx(t)
	got, err := c.BlockStatus(ctx, ContextAllocation, 0, c.Export().Size)
	if err != nil {
		t.Fatal(err)
	}
	if want := qemuImgMap(t, img); !reflect.DeepEqual(got, want) {
		t.Errorf("BlockStatus:\n%v\nqemu-img map:\n%v", got, want)
	}
	// An unaligned range inside one extent.
	got, err = c.BlockStatus(ctx, ContextAllocation, 1<<20+5, 100)
	if want := []Extent{{1<<20 + 5, 100, 0}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("BlockStatus(1M+5, 100) = %v, %v; want %v", got, want, err)
	}
}

func TestDirtyBitmap(t *testing.T) {
	img := filepath.Join(t.TempDir(), "dirty.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	testbed.Run(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	testbed.Run(t, "qemu-io", "-c", "write -P 0xcd 1M 64k", img)
	s := qemuNBD(t, img, "-r", "-f", "qcow2", "-B", "b0")
	names, err := ListMetaContexts(testCtx(t), s.uri(), Options{}, ContextDirtyBitmapBase)
	if err != nil || !reflect.DeepEqual(names, []string{"qemu:dirty-bitmap:b0"}) {
		t.Errorf("ListMetaContexts(qemu:dirty-bitmap:) = %v, %v", names, err)
	}
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation, "qemu:dirty-bitmap:b0"}})
	got, err := c.BlockStatus(testCtx(t), "qemu:dirty-bitmap:b0", 0, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{0, 1 << 20, 0}, {1 << 20, 64 << 10, StateDirty}, {1<<20 + 64<<10, 15<<20 - 64<<10, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dirty extents %v; want %v", got, want)
	}
}

func TestWrites(t *testing.T) {
	img := filepath.Join(t.TempDir(), "w.raw")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "raw", img, "16M")
	s := qemuNBD(t, img, "-f", "raw")
	c := dial(t, s.uri(), Options{})
	if f := c.Export().Flags; f.ReadOnly() || !f.CanFlush() || !f.CanTrim() || !f.CanWriteZeroes() {
		t.Fatalf("flags %#x: want writable with flush, trim and write zeroes", f)
	}
	ctx := testCtx(t)
	data := patternAt(0, 3<<20)
	if err := c.WriteAt(ctx, data, 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(ctx, 2<<20+4096, 8192, false); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(ctx, 3<<20, 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(ctx, 8<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 16<<20)
	copy(want[2<<20:], data)
	clear(want[2<<20+4096 : 2<<20+4096+8192])
	clear(want[3<<20 : 3<<20+4096])
	got := make([]byte, 16<<20)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("read back: wrong data")
	}
	file, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, want) {
		t.Error("image file after flush: wrong data")
	}
}

func TestWriteReadOnly(t *testing.T) {
	img, _ := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{})
	ctx := testCtx(t)
	for _, err := range []error{
		c.WriteAt(ctx, make([]byte, 512), 0),
		c.WriteZeroes(ctx, 0, 512, false),
		c.Trim(ctx, 0, 512),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("write to a read-only export: %v; want ErrReadOnly", err)
		}
	}
}

func TestMultiConn(t *testing.T) {
	img, want := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	conns, err := DialMulti(testCtx(t), s.uri(), Options{}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 4 {
		t.Errorf("DialMulti on a multi-conn export: %d connections; want 4", len(conns))
	}
	for i, c := range conns {
		p := make([]byte, 1<<20)
		if err := c.ReadAt(testCtx(t), p, uint64(i)<<20); err != nil || !bytes.Equal(p, want[i<<20:(i+1)<<20]) {
			t.Errorf("connection %d: err %v or wrong data", i, err)
		}
		c.Close()
	}

	s = nbdkit(t, "--filter=multi-conn", "memory", "size=1M", "multi-conn-mode=disable")
	conns, err = DialMulti(testCtx(t), s.uri(), Options{}, 4)
	if err != nil || len(conns) != 1 {
		t.Errorf("DialMulti on an export without multi-conn: %d connections, %v; want 1", len(conns), err)
	}
	for _, c := range conns {
		c.Close()
	}
}

func TestTCP(t *testing.T) {
	img, want := sparseImage(t)
	testbed.Need(t, "qemu-nbd")
	s := startTCPServer(t, "qemu-nbd", "-b", "127.0.0.1", "-p", "PORT", "-x", "vda", "-t", "-e", "4", "-r", "-f", "qcow2", img)
	uri := withExport(s, "vda")
	c := dial(t, uri, Options{})
	p := make([]byte, len(want))
	if err := c.ReadAt(testCtx(t), p, 0); err != nil || !bytes.Equal(p, want) {
		t.Errorf("ReadAt over TCP (%s): %v or wrong data", uri, err)
	}
	if _, err := Dial(testCtx(t), withExport(s, "nope"), Options{}); err == nil {
		t.Error("Dial of an unknown export succeeded")
	} else if want := `nbd: export "nope": handshake: server refused NBD_OPT_GO: unknown export`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Dial of an unknown export: %v; want %s...", err, want)
	}
}

func TestAllocationDepth(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	testbed.Run(t, "qemu-io", "-c", "write -P 1 0 1M", base)
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	testbed.Run(t, "qemu-io", "-c", "write -P 2 2M 1M", top)
	s := qemuNBD(t, top, "-r", "-f", "qcow2", "-A")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocationDepth}})
	got, err := c.BlockStatus(testCtx(t), ContextAllocationDepth, 0, 4<<20)
	want := []Extent{{0, 1 << 20, 2}, {1 << 20, 1 << 20, 0}, {2 << 20, 1 << 20, 1}, {3 << 20, 1 << 20, 0}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("qemu:allocation-depth = %v, %v; want %v", got, err, want)
	}
}
