package nbd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// withExport is the URI of s with the export name set.
func withExport(s *server, name string) string {
	t := s.target
	t.Export = name
	return t.String()
}

func TestHandshakeInfo(t *testing.T) {
	s := nbdkit(t, "--filter=blocksize-policy", "pattern", "size=8M",
		"blocksize-minimum=512", "blocksize-preferred=4K", "blocksize-maximum=64K")
	uri := withExport(s, "vda")
	c := dial(t, uri, Options{})
	e := c.Export()
	want := BlockSize{Min: 512, Preferred: 4096, Max: 65536, Advertised: true}
	if e.Name != "vda" || e.Size != 8<<20 || e.BlockSize != want {
		t.Errorf("Export() = %+v; want vda, 8 MiB, %+v", e, want)
	}
	if !e.Flags.ReadOnly() || !e.Flags.CanMultiConn() || e.Flags.CanTrim() {
		t.Errorf("flags %#x: want read-only, multi-conn, no trim", e.Flags)
	}
	if !c.StructuredReplies() || c.MaxRequest() != 65536 {
		t.Errorf("structured %v, max request %d; want true, 65536", c.StructuredReplies(), c.MaxRequest())
	}
	info, err := Info(testCtx(t), uri, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != e.Size || info.Flags != e.Flags || info.BlockSize != e.BlockSize {
		t.Errorf("Info() = %+v; Dial's export is %+v", info, e)
	}
}

func TestHandshakeDefaults(t *testing.T) {
	s := nbdkit(t, "pattern", "size=1M")
	c := dial(t, s.uri(), Options{})
	if bs := c.Export().BlockSize; bs.Advertised || bs.Min != 1 || bs.Max != 32<<20 {
		t.Errorf("BlockSize = %+v; want the defaults, not advertised", bs)
	}
	if c.MaxRequest() != 32<<20 {
		t.Errorf("MaxRequest = %d; want 32 MiB", c.MaxRequest())
	}
}

func TestReadPattern(t *testing.T) {
	s := nbdkit(t, "pattern", "size=64M")
	c := dial(t, s.uri(), Options{})
	ctx := testCtx(t)
	for _, r := range []struct{ off, n uint64 }{
		{0, 1 << 20}, {3, 1001}, {64<<20 - 4096, 4096}, {7, 40 << 20}, {64<<20 - 1, 1},
	} {
		p := make([]byte, r.n)
		if err := c.ReadAt(ctx, p, r.off); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(p, patternAt(r.off, int(r.n))) {
			t.Errorf("ReadAt(%d, %d): wrong data", r.off, r.n)
		}
	}
	err := c.ReadAt(ctx, make([]byte, 2), 64<<20-1)
	if !errors.Is(err, ErrRange) {
		t.Errorf("read past the end: %v; want ErrRange", err)
	}
}

// The blocksize-policy filter fails any request that breaks its
// constraints, so reads that succeed were split and aligned as asked.
func TestReadSplitAndAligned(t *testing.T) {
	s := nbdkit(t, "--filter=blocksize-policy", "pattern", "size=16M", "blocksize-error-policy=error",
		"blocksize-minimum=512", "blocksize-preferred=4K", "blocksize-maximum=64K")
	c := dial(t, s.uri(), Options{})
	ctx := testCtx(t)
	for _, r := range []struct{ off, n uint64 }{{4096, 1 << 20}, {100, 3000}, {511, 200000}, {16<<20 - 5, 5}} {
		p := make([]byte, r.n)
		if err := c.ReadAt(ctx, p, r.off); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(p, patternAt(r.off, int(r.n))) {
			t.Errorf("ReadAt(%d, %d): wrong data", r.off, r.n)
		}
	}
}

func TestConcurrentReads(t *testing.T) {
	s := nbdkit(t, "pattern", "size=256M")
	c := dial(t, s.uri(), Options{})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 20 {
				n := 1 + rng.IntN(256<<10)
				off := rng.Uint64N(256<<20 - uint64(n))
				p := make([]byte, n)
				if err := c.ReadAt(ctx, p, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(p, patternAt(off, n)) {
					t.Errorf("ReadAt(%d, %d): wrong data", off, n)
				}
			}
		})
	}
	wg.Wait()
}

func TestReadServerError(t *testing.T) {
	s := nbdkit(t, "--filter=error", "pattern", "size=16M", "error-pread=EIO", "error-pread-rate=1")
	c := dial(t, withExport(s, "vda"), Options{})
	for range 2 { // the connection survives a server error
		err := c.ReadAt(testCtx(t), make([]byte, 65536), 1<<20)
		want := `nbd: export "vda": read at offset 1048576 (65536 bytes): EIO`
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("err = %v; want %s", err, want)
		}
		if !errors.Is(err, EIO) || !errors.Is(err, syscall.EIO) || errors.Is(err, ErrDisconnected) {
			t.Errorf("%v: want EIO and not ErrDisconnected", err)
		}
	}
}

// A server that dies with requests in flight fails every one of them at
// once, and every later one.
func TestServerKilledMidRead(t *testing.T) {
	s := nbdkit(t, "--filter=delay", "pattern", "size=64M", "rdelay=10")
	c := dial(t, withExport(s, "vda"), Options{})
	ctx := testCtx(t)
	errs := make(chan error, 16)
	for i := range 16 {
		go func() { errs <- c.ReadAt(ctx, make([]byte, 4096), uint64(i)<<20) }()
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	s.kill()
	for range 16 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrDisconnected) || !strings.Contains(err.Error(), `export "vda": read at offset`) {
				t.Errorf("err = %v; want a lost connection naming the read", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read still hangs 5s after the server died")
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("pending reads took %v to fail", d)
	}
	if err := c.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrDisconnected) {
		t.Errorf("read after the drop: %v; want ErrDisconnected", err)
	}
}

// With a slow server, requests in flight together take about as long as
// one.
func TestLatencyHidden(t *testing.T) {
	const delay = 200 * time.Millisecond
	s := nbdkit(t, "-t", "32", "--filter=delay", "pattern", "size=64M", "rdelay=200ms")
	c := dial(t, s.uri(), Options{})
	ctx := testCtx(t)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if err := c.ReadAt(ctx, make([]byte, 65536), uint64(i)<<20); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 4*delay {
		t.Errorf("32 concurrent reads took %v; serial would be %v, want under %v", d, 32*delay, 4*delay)
	}
}

func TestSimpleReplies(t *testing.T) {
	s := nbdkit(t, "--no-sr", "pattern", "size=8M")
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation}})
	if c.StructuredReplies() || len(c.MetaContexts()) != 0 {
		t.Fatalf("structured %v, contexts %v; want neither", c.StructuredReplies(), c.MetaContexts())
	}
	ctx := testCtx(t)
	p := make([]byte, 3<<20)
	holes, err := c.ReadAtSparse(ctx, p, 12345)
	if err != nil || len(holes) != 0 || !bytes.Equal(p, patternAt(12345, len(p))) {
		t.Errorf("ReadAtSparse: holes %v, err %v, data right %v", holes, err, bytes.Equal(p, patternAt(12345, len(p))))
	}
	if _, err := c.BlockStatus(ctx, ContextAllocation, 0, 4096); !errors.Is(err, ErrUnsupported) {
		t.Errorf("BlockStatus without structured replies: %v; want ErrUnsupported", err)
	}
}

func TestListMetaContexts(t *testing.T) {
	s := nbdkit(t, "memory", "size=1M")
	names, err := ListMetaContexts(testCtx(t), s.uri(), Options{})
	if err != nil || len(names) != 1 || names[0] != ContextAllocation {
		t.Errorf("ListMetaContexts = %v, %v; want [base:allocation]", names, err)
	}
	c := dial(t, s.uri(), Options{MetaContexts: []string{ContextAllocation, "qemu:dirty-bitmap:nope"}})
	if got := c.MetaContexts(); len(got) != 1 || got[0] != ContextAllocation {
		t.Errorf("MetaContexts() = %v; want [base:allocation]", got)
	}
	_, err = c.BlockStatus(testCtx(t), "qemu:dirty-bitmap:nope", 0, 4096)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "not negotiated") {
		t.Errorf("BlockStatus of a context not granted: %v", err)
	}
}
