package nbd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// memDst is an in-memory io.WriterAt; with zeroer set it is a ZeroerAt
// too, counting what it was asked to zero.
type memDst struct {
	b      []byte
	zeroed int64
}

func (m *memDst) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

type zeroingDst struct{ *memDst }

func (z zeroingDst) ZeroAt(off, n int64) error {
	clear(z.b[off : off+n])
	z.zeroed += n
	return nil
}

func TestCopySparse(t *testing.T) {
	img, want := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation}})
	out := filepath.Join(t.TempDir(), "out.raw")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(int64(len(want)))
	var progress int64
	n, err := Copy(testCtx(t), c, f, CopyOptions{RequestSize: 256 << 10, Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	if data := int64(1<<20 + 64<<10 + 3<<20); n != data || progress != data {
		t.Errorf("Copy wrote %d bytes, progress said %d; want only the %d of data", n, progress, data)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Error("copy differs from the image")
	}
}

// Written is told each part of the export as it lands in dst: the parts
// laid side by side are the export, and they are what the copy wrote.
func TestCopyTellsWhatItWrote(t *testing.T) {
	img, want := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation}})
	dst := &memDst{b: make([]byte, len(want))}
	var mu sync.Mutex
	told := make([]byte, len(want))
	var data uint64
	n, err := Copy(testCtx(t), c, dst, CopyOptions{RequestSize: 64 << 10, Written: func(off, n uint64, p []byte) {
		mu.Lock()
		defer mu.Unlock()
		if p == nil {
			return // a hole: told reads as zeroes there already
		}
		if uint64(len(p)) != n {
			t.Errorf("told %d bytes at %d with %d bytes of data", n, off, len(p))
		}
		copy(told[off:], p)
		data += n
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(told, want) {
		t.Error("what Written was told differs from the export")
	}
	if data != uint64(n) {
		t.Errorf("Written was told of %d bytes of data, the copy wrote %d", data, n)
	}
}

// An incremental copy over the previous backup: only what the bitmap
// marks dirty is read, and dirty ranges that now read as zeroes are zeroed.
func TestCopyDirty(t *testing.T) {
	img := filepath.Join(t.TempDir(), "inc.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	testbed.Run(t, "qemu-io", "-c", "write -P 0xaa 0 4M", img)
	old := make([]byte, 8<<20)
	copy(old, bytes.Repeat([]byte{0xaa}, 4<<20))
	testbed.Run(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	testbed.Run(t, "qemu-io", "-c", "write -P 0xcd 1M 64k", "-c", "write -z 3M 64k", "-c", "write -P 0xee 6M 128k", img)
	want := bytes.Clone(old)
	copy(want[1<<20:], bytes.Repeat([]byte{0xcd}, 64<<10))
	clear(want[3<<20 : 3<<20+64<<10])
	copy(want[6<<20:], bytes.Repeat([]byte{0xee}, 128<<10))
	s := qemuNBD(t, img, "-r", "-f", "qcow2", "-B", "b0")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation, "qemu:dirty-bitmap:b0"}})

	for _, zeroer := range []bool{false, true} {
		m := &memDst{b: bytes.Clone(old)}
		var dst io.WriterAt = m
		if zeroer {
			dst = zeroingDst{m}
		}
		n, err := Copy(testCtx(t), c, dst, CopyOptions{Dirty: "qemu:dirty-bitmap:b0", DstNotZero: true})
		if err != nil {
			t.Fatal(err)
		}
		if n != 256<<10 || !bytes.Equal(m.b, want) {
			t.Errorf("zeroer %v: wrote %d bytes (want 256 KiB), result right: %v", zeroer, n, bytes.Equal(m.b, want))
		}
		if zeroer && m.zeroed != 64<<10 {
			t.Errorf("ZeroAt zeroed %d bytes; want 64 KiB", m.zeroed)
		}
	}
	if _, err := Copy(testCtx(t), c, &memDst{b: make([]byte, 8<<20)}, CopyOptions{Dirty: "qemu:dirty-bitmap:nope"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Copy with a bitmap not negotiated: %v; want ErrUnsupported", err)
	}
}

func TestCopyMultiConn(t *testing.T) {
	s := nbdkit(t, "pattern", "size=96M")
	c := dial(t, s.uri(), Options{})
	m := &memDst{b: make([]byte, 96<<20)}
	n, err := Copy(testCtx(t), c, m, CopyOptions{Connections: 4, InFlight: 8, RequestSize: 1 << 20})
	if err != nil || n != 96<<20 || !bytes.Equal(m.b, patternAt(0, 96<<20)) {
		t.Errorf("Copy over 4 connections: %d bytes, %v; data right: %v", n, err, bytes.Equal(m.b, patternAt(0, 96<<20)))
	}
}

func TestCopyReadError(t *testing.T) {
	s := nbdkit(t, "--filter=error", "pattern", "size=64M", "error-pread=EIO", "error-pread-rate=1")
	c := dial(t, withExport(s, "vda"), Options{})
	_, err := Copy(testCtx(t), c, &memDst{b: make([]byte, 64<<20)}, CopyOptions{})
	if !errors.Is(err, EIO) || !strings.Contains(err.Error(), `export "vda": read at offset`) {
		t.Errorf("Copy from a failing disk: %v; want EIO naming the read", err)
	}
}

func seq(pieces ...Piece) iter.Seq2[Piece, error] {
	return func(yield func(Piece, error) bool) {
		for _, p := range pieces {
			if !yield(p, nil) {
				return
			}
		}
	}
}

// CopyPieces puts each piece where it says, leaves the holes of reads
// unwritten unless DstNotZero, and zeroes zero pieces without reading them
// (this one lies beyond the export). Progress counts every piece's bytes.
func TestCopyPieces(t *testing.T) {
	img, _ := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{})
	pieces := []Piece{
		{Offset: 1 << 20, Length: 1<<20 + 64<<10, To: 64 << 10}, // 0xab, then a hole
		{Offset: 10 << 20, Length: 64 << 10, To: 3 << 20},       // 0xcd
		{Offset: 40 << 20, Length: 512 << 10, To: 7 << 20},      // 0x11
		{Offset: 1 << 40, Length: 128 << 10, To: 5 << 20, Zero: true},
	}
	for _, notZero := range []bool{false, true} {
		m := &memDst{b: bytes.Repeat([]byte{0xff}, 8<<20)}
		var progress int64
		n, err := CopyPieces(testCtx(t), []*Conn{c}, zeroingDst{m}, seq(pieces...),
			CopyOptions{RequestSize: 64 << 10, InFlight: 4, DstNotZero: notZero, Progress: func(n int64) { progress += n }})
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{0xff}, 8<<20)
		copy(want[64<<10:], bytes.Repeat([]byte{0xab}, 1<<20))
		copy(want[3<<20:], bytes.Repeat([]byte{0xcd}, 64<<10))
		copy(want[7<<20:], bytes.Repeat([]byte{0x11}, 512<<10))
		clear(want[5<<20 : 5<<20+128<<10])
		wantN := int64(1<<20 + 64<<10 + 512<<10 + 128<<10)
		if notZero {
			clear(want[64<<10+1<<20 : 128<<10+1<<20])
			wantN += 64 << 10
		}
		if !bytes.Equal(m.b, want) || n != wantN || progress != 1<<20+64<<10+64<<10+512<<10+128<<10 {
			t.Errorf("DstNotZero %v: data right %v, wrote %d (want %d), progress %d", notZero, bytes.Equal(m.b, want), n, wantN, progress)
		}
	}

	boom := errors.New("boom")
	failing := func(yield func(Piece, error) bool) {
		if yield(pieces[0], nil) {
			yield(Piece{}, boom)
		}
	}
	if _, err := CopyPieces(testCtx(t), []*Conn{c}, &memDst{b: make([]byte, 8<<20)}, failing, CopyOptions{}); !errors.Is(err, boom) {
		t.Errorf("CopyPieces with a failing plan: %v; want its error", err)
	}
}

// Extents asks block status a window at a time and yields the export's
// extents in order, covering it exactly, cut to the dirty ones when asked.
func TestExtents(t *testing.T) {
	img := filepath.Join(t.TempDir(), "big.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "2500M")
	testbed.Run(t, "qemu-io", "-c", "write -P 0x11 1023M 2M", "-c", "write -z 2000M 1M", img) // across the first window's end
	testbed.Run(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	testbed.Run(t, "qemu-io", "-c", "write -P 0x22 1M 64k", "-c", "write -z 1023M 64k", "-c", "write -P 0x33 2047M 2M", img)
	s := qemuNBD(t, img, "-r", "-f", "qcow2", "-B", "b0")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation, "qemu:dirty-bitmap:b0"}})

	var all []Extent
	for e, err := range c.Extents(testCtx(t), "") {
		if err != nil {
			t.Fatal(err)
		}
		if n := len(all); (n == 0 && e.Offset != 0) || (n > 0 && all[n-1].End() != e.Offset) {
			t.Fatalf("extent %+v does not follow %+v", e, all)
		}
		all = append(all, e)
	}
	if got, want := mergeExtents(all), qemuImgMap(t, img); !slices.Equal(got, want) {
		t.Errorf("extents %+v, want qemu-img map's %+v", got, want)
	}
	var dirty []Extent
	for e, err := range c.Extents(testCtx(t), "qemu:dirty-bitmap:b0") {
		if err != nil {
			t.Fatal(err)
		}
		dirty = append(dirty, Extent{Offset: e.Offset, Length: e.Length, Flags: e.Flags & StateZero})
	}
	want := []Extent{{Offset: 1 << 20, Length: 64 << 10}, {Offset: 1023 << 20, Length: 64 << 10, Flags: StateZero},
		{Offset: 2047 << 20, Length: 1 << 20}, {Offset: 2048 << 20, Length: 1 << 20}} // cut at the window
	if !slices.Equal(dirty, want) {
		t.Errorf("dirty extents %+v, want %+v", dirty, want)
	}
}

// BenchmarkCopyVsNbdcopy compares Copy with nbdcopy on a 1 GiB qemu-nbd
// export of random data, best of three each, and reports the ratio of
// Copy's time to nbdcopy's (go test ./nbd -run '^$' -bench CopyVsNbdcopy).
func BenchmarkCopyVsNbdcopy(b *testing.B) {
	t := b
	testbed.Need(t, "nbdcopy", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "random.raw")
	buf := make([]byte, 1<<30)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(buf)
	if err := os.WriteFile(img, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	s := qemuNBD(t, img, "-r", "-f", "raw")
	out := filepath.Join(dir, "out.raw")
	best := func(f func() error) time.Duration {
		var b time.Duration
		for range 3 {
			os.Remove(out)
			start := time.Now()
			if err := f(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); b == 0 || d < b {
				b = d
			}
		}
		return b
	}
	nbdcopy := best(func() error {
		out, err := exec.Command("nbdcopy", s.uri(), out).CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	})
	for i, o := range []CopyOptions{{}, {Connections: 2}, {InFlight: 64}, {RequestSize: 4 << 20}} {
		ours := best(func() error {
			c, err := Dial(testCtx(t), s.uri(), Options{MetaContexts: []string{ContextAllocation}})
			if err != nil {
				return err
			}
			defer c.Close()
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			defer f.Close()
			f.Truncate(1 << 30)
			_, err = Copy(testCtx(t), c, f, o)
			return err
		})
		t.Logf("1 GiB: nbdcopy %v; Copy (request size %d, in flight %d, connections %d) %v: %.2f× nbdcopy's time",
			nbdcopy, o.RequestSize, o.InFlight, o.Connections, ours, float64(ours)/float64(nbdcopy))
		if i == 0 { // the defaults
			b.ReportMetric(float64(ours)/float64(nbdcopy), "x-nbdcopy-time")
		}
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, buf) {
		t.Error("copy differs from the image")
	}
}

// bufferDst records the distinct buffers the copy writes from.
type bufferDst struct {
	memDst
	mu   sync.Mutex
	seen map[*byte]bool
}

func (d *bufferDst) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.seen[&p[:1][0]] = true
	d.mu.Unlock()
	time.Sleep(200 * time.Microsecond) // a slow disk: replies pile up
	return d.memDst.WriteAt(p, off)
}

// Reads in flight hold no memory: a copy with 256 of them over 4
// connections writes from no more than its Buffers buffers, and the data
// is right.
func TestCopyBuffersBoundMemory(t *testing.T) {
	s := nbdkit(t, "pattern", "size=64M")
	c := dial(t, s.uri(), Options{})
	d := &bufferDst{memDst: memDst{b: make([]byte, 64<<20)}, seen: map[*byte]bool{}}
	n, err := Copy(testCtx(t), c, d, CopyOptions{Connections: 4, InFlight: 256, Buffers: 6, RequestSize: 64 << 10})
	if err != nil || n != 64<<20 || !bytes.Equal(d.b, patternAt(0, 64<<20)) {
		t.Fatalf("Copy: %d bytes, %v; data right: %v", n, err, bytes.Equal(d.b, patternAt(0, 64<<20)))
	}
	if len(d.seen) > 6 {
		t.Errorf("the copy wrote from %d buffers; want at most 6", len(d.seen))
	}
}

// A copy cancelled while replies wait for a buffer ends, and its
// connections close, without waiting for the rest of the export.
func TestCopyCancelledWithRepliesWaiting(t *testing.T) {
	s := nbdkit(t, "pattern", "size=256M")
	c := dial(t, s.uri(), Options{})
	ctx, cancel := context.WithCancel(testCtx(t))
	d := &cancellingDst{memDst: memDst{b: make([]byte, 256<<20)}, after: 8, cancel: cancel}
	start := time.Now()
	_, err := Copy(ctx, c, d, CopyOptions{Connections: 2, InFlight: 128, Buffers: 2, RequestSize: 64 << 10})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v; want context.Canceled", err)
	}
	closed := make(chan error)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung after a cancelled copy")
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("the cancelled copy took %s", el)
	}
}

// cancellingDst cancels the copy at its after'th write, then writes slowly.
type cancellingDst struct {
	memDst
	mu     sync.Mutex
	n      int
	after  int
	cancel func()
}

func (d *cancellingDst) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.n++
	if d.n == d.after {
		d.cancel()
	}
	d.mu.Unlock()
	time.Sleep(time.Millisecond)
	return d.memDst.WriteAt(p, off)
}

// A server may interleave the chunks of its replies (QEMU takes its send
// lock per chunk). Here each of 4 reads gets half its reply, as a hole,
// before any gets the rest, with 2 buffers for the copy: the reader must
// not wait for a buffer that only a reply it has yet to finish would free.
func TestCopyInterleavedReplies(t *testing.T) {
	const req = 64 << 10
	var mu sync.Mutex
	var n int
	halfSent := make(chan struct{})
	f := &fakeServer{size: 4 * req, structured: true}
	f.handle = func(w io.Writer, r fakeRequest) {
		half := r.length / 2
		mu.Lock()
		w.Write(holeChunk(r.cookie, false, r.off, half))
		if n++; n == 4 {
			close(halfSent)
		}
		mu.Unlock()
		<-halfSent
		mu.Lock()
		w.Write(dataChunk(r.cookie, true, r.off+uint64(half), patternAt(r.off+uint64(half), int(half))))
		mu.Unlock()
	}
	c := dial(t, f.start(t), Options{})
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	d := &memDst{b: make([]byte, 4*req)}
	if _, err := Copy(ctx, c, d, CopyOptions{InFlight: 4, Buffers: 2, RequestSize: req}); err != nil {
		t.Fatalf("Copy from a server that interleaves replies: %v", err)
	}
	for i := range 4 {
		off := uint64(i * req)
		want := append(make([]byte, req/2), patternAt(off+req/2, req/2)...)
		if !bytes.Equal(d.b[off:off+req], want) {
			t.Errorf("read %d is wrong", i)
		}
	}
}
