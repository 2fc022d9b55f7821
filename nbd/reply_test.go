package nbd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// replyCase is a scripted reply and what the client must make of it.
type replyCase struct {
	name    string
	reply   func(r fakeRequest) []byte
	want    error // nil: success
	dropped bool  // the client must drop the connection
}

// runReplyCase serves the case's reply to every request but FLUSH, runs
// op, and checks its error and whether the connection survived (a FLUSH,
// answered properly, must work on a connection that survived).
func runReplyCase(t *testing.T, tc replyCase, contexts []string, op func(context.Context, *Conn) error) {
	f := &fakeServer{size: 1 << 20, flags: uint16(FlagSendFlush), structured: true, contexts: contexts}
	f.handle = func(w io.Writer, r fakeRequest) {
		if r.typ == cmdFlush {
			w.Write(noneChunk(r.cookie))
			return
		}
		w.Write(tc.reply(r))
	}
	c := dial(t, f.start(t), Options{MetaContexts: contexts})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := op(ctx, c)
	if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
		t.Errorf("%s: err = %v; want %v", tc.name, err, tc.want)
	}
	if err != nil && !errors.As(err, new(*Error)) {
		t.Errorf("%s: %v is not an *Error", tc.name, err)
	}
	err = c.Flush(ctx)
	if tc.dropped != errors.Is(err, ErrDisconnected) {
		t.Errorf("%s: flush after: %v; want the connection dropped: %v", tc.name, err, tc.dropped)
	}
}

func TestReadReplies(t *testing.T) {
	data := patternAt(0, 4096)
	for _, tc := range []replyCase{
		{name: "two chunks in order", reply: func(r fakeRequest) []byte {
			return cat(dataChunk(r.cookie, false, 0, data[:1000]), dataChunk(r.cookie, true, 1000, data[1000:]))
		}},
		{name: "out of order, hole, NONE", reply: func(r fakeRequest) []byte {
			return cat(dataChunk(r.cookie, false, 2048, data[2048:]), holeChunk(r.cookie, false, 0, 2048), noneChunk(r.cookie))
		}},
		{name: "overlapping chunks", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return cat(dataChunk(r.cookie, false, 0, data[:2048]), dataChunk(r.cookie, true, 2000, data[2000:]))
		}},
		{name: "hole overlapping data", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return cat(holeChunk(r.cookie, false, 0, 4096), dataChunk(r.cookie, true, 0, data[:1]))
		}},
		{name: "chunk past the end", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return dataChunk(r.cookie, true, 1, data)
		}},
		{name: "hole past the end", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return holeChunk(r.cookie, true, 4095, 0xffffffff)
		}},
		{name: "short read claimed done", want: ErrProtocol, reply: func(r fakeRequest) []byte {
			return dataChunk(r.cookie, true, 0, data[:4095])
		}},
		{name: "error chunk", want: EIO, reply: func(r fakeRequest) []byte {
			return errorChunk(r.cookie, true, 5, "disk on fire")
		}},
		{name: "error offset after data", want: ENOSPC, reply: func(r fakeRequest) []byte {
			return cat(dataChunk(r.cookie, false, 0, data), errorOffsetChunk(r.cookie, true, 28, "x", 100))
		}},
		{name: "unknown error type", want: EINVAL, reply: func(r fakeRequest) []byte {
			return chunk(r.cookie, replyFlagDone, chunkErrorBit|9, []byte{0, 0, 0, 22, 0, 1, 'm', 7, 7, 7})
		}},
		{name: "error message longer than chunk", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return chunk(r.cookie, replyFlagDone, chunkError, []byte{0, 0, 0, 5, 0, 9, 'm'})
		}},
		{name: "unknown chunk type", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return chunk(r.cookie, replyFlagDone, 77, nil)
		}},
		{name: "NONE not last", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return chunk(r.cookie, 0, chunkNone, nil)
		}},
		{name: "data chunk without data", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return chunk(r.cookie, replyFlagDone, chunkOffsetData, make([]byte, 8))
		}},
		{name: "block status in a read reply", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return statusChunk(r.cookie, true, 1, 4096, 0)
		}},
		{name: "simple reply to a structured read", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return simpleReply(r.cookie, 0, data)
		}},
		{name: "simple error reply", want: EPERM, reply: func(r fakeRequest) []byte {
			return simpleReply(r.cookie, 1, nil)
		}},
		{name: "unknown cookie", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return noneChunk(r.cookie + 1000)
		}},
		{name: "bad magic", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return []byte("HTTP/1.1 400 Bad Request\r\n")
		}},
	} {
		runReplyCase(t, tc, nil, func(ctx context.Context, c *Conn) error {
			p := make([]byte, 4096)
			err := c.ReadAt(ctx, p, 0)
			if err == nil && !bytes.Equal(p, cat(make([]byte, 2048), data[2048:])) && !bytes.Equal(p, data) {
				t.Errorf("%s: wrong data", tc.name)
			}
			return err
		})
	}
}

func TestBlockStatusReplies(t *testing.T) {
	contexts := []string{ContextAllocation, "qemu:dirty-bitmap:b0"}
	// Each reply answers for the request's offset, so that BlockStatus
	// asking again where an answer fell short gets an answer too.
	both := func(r fakeRequest, base []uint32) []byte {
		return cat(statusChunk(r.cookie, false, 2, r.length, 1), statusChunk(r.cookie, true, 1, base...))
	}
	for _, tc := range []replyCase{
		{name: "two contexts", reply: func(r fakeRequest) []byte {
			if r.off == 0 {
				return both(r, []uint32{4096, 0, 4096, StateHole | StateZero})
			}
			return both(r, []uint32{r.length, 0})
		}},
		{name: "short answers", reply: func(r fakeRequest) []byte { return both(r, []uint32{512, 0}) }},
		{name: "last extent past the range", reply: func(r fakeRequest) []byte { return both(r, []uint32{1 << 30, 0}) }},
		{name: "a context missing", want: ErrProtocol, reply: func(r fakeRequest) []byte {
			return statusChunk(r.cookie, true, 1, r.length, 0)
		}},
		{name: "unknown context ID", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return cat(statusChunk(r.cookie, false, 9, r.length, 0), both(r, []uint32{r.length, 0}))
		}},
		{name: "context twice", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return cat(statusChunk(r.cookie, false, 1, r.length, 0), both(r, []uint32{r.length, 0}))
		}},
		{name: "empty extent", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return both(r, []uint32{0, 0})
		}},
		{name: "extents after the range", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return both(r, []uint32{r.length, 0, 512, 0})
		}},
		{name: "no extent", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return both(r, nil)
		}},
		{name: "data in a block status reply", want: ErrProtocol, dropped: true, reply: func(r fakeRequest) []byte {
			return dataChunk(r.cookie, true, r.off, make([]byte, 1))
		}},
		{name: "error", want: EINVAL, reply: func(r fakeRequest) []byte {
			return errorChunk(r.cookie, true, 22, "")
		}},
	} {
		runReplyCase(t, tc, contexts, func(ctx context.Context, c *Conn) error {
			got, err := c.BlockStatus(ctx, ContextAllocation, 0, 8192)
			want := []Extent{{0, 8192, 0}}
			if tc.name == "two contexts" {
				want = []Extent{{0, 4096, 0}, {4096, 4096, StateHole | StateZero}}
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Errorf("%s: extents %v; want %v", tc.name, got, want)
			}
			if err == nil {
				got, err = c.BlockStatus(ctx, "qemu:dirty-bitmap:b0", 100, 8000)
				if want := []Extent{{100, 8000, StateDirty}}; err == nil && !reflect.DeepEqual(got, want) {
					t.Errorf("%s: dirty extents %v; want %v", tc.name, got, want)
				}
			}
			return err
		})
	}
}

// holeServer answers every read with one hole chunk and every write with
// success, and records the requests.
func holeServer(size uint64, flags uint16, blockSize []uint32) *fakeServer {
	f := &fakeServer{size: size, flags: flags, structured: true, blockSize: blockSize}
	f.handle = func(w io.Writer, r fakeRequest) {
		if r.typ == cmdRead {
			w.Write(holeChunk(r.cookie, true, r.off, r.length))
			return
		}
		w.Write(noneChunk(r.cookie))
	}
	return f
}

func TestRequestSizes(t *testing.T) {
	f := holeServer(64<<20, 0, nil)
	c := dial(t, f.start(t), Options{})
	ctx := testCtx(t)
	if err := c.ReadAt(ctx, make([]byte, 40<<20), 0); err != nil {
		t.Fatal(err)
	}
	var lengths []uint32
	for _, r := range f.requests() {
		lengths = append(lengths, r.length)
	}
	if want := []uint32{32 << 20, 8 << 20}; !reflect.DeepEqual(lengths, want) {
		t.Errorf("a 40 MiB read without block sizes was sent as %v; want %v", lengths, want)
	}

	f = holeServer(8<<20, 0, []uint32{512, 4096, 1 << 20})
	c = dial(t, f.start(t), Options{})
	p := bytes.Repeat([]byte{1}, 3<<20+100)
	holes, err := c.ReadAtSparse(ctx, p, 10)
	if err != nil || !bytes.Equal(p, make([]byte, len(p))) {
		t.Fatalf("ReadAtSparse: %v, or not zeroed", err)
	}
	if want := []Extent{{10, uint64(len(p)), StateHole | StateZero}}; !reflect.DeepEqual(holes, want) {
		t.Errorf("holes %v; want %v", holes, want)
	}
	for _, r := range f.requests() {
		if r.off%512 != 0 || r.length%512 != 0 || r.length > 1<<20 {
			t.Errorf("request at %d of %d bytes breaks the block sizes 512..1M", r.off, r.length)
		}
	}
	if err := c.WriteAt(ctx, make([]byte, 100), 0); !errors.Is(err, ErrAlignment) {
		t.Errorf("unaligned write: %v; want ErrAlignment", err)
	}
}

func TestWriteZeroesFallback(t *testing.T) {
	f := holeServer(8<<20, 0, nil)
	c := dial(t, f.start(t), Options{})
	if err := c.WriteZeroes(testCtx(t), 4096, 3<<20, false); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, r := range f.requests() {
		if r.typ != cmdWrite {
			t.Errorf("request type %d; want only writes", r.typ)
		}
		n += uint64(r.length)
	}
	if n != 3<<20 {
		t.Errorf("wrote %d bytes of zeroes; want %d", n, 3<<20)
	}
}

// A read whose context ends returns at once, and its late reply is read
// and dropped without touching the caller's buffer.
func TestCancelledRead(t *testing.T) {
	release := make(chan struct{})
	f := &fakeServer{size: 1 << 20, structured: true}
	f.handle = func(w io.Writer, r fakeRequest) {
		if r.off == 0 {
			<-release
		}
		w.Write(dataChunk(r.cookie, true, r.off, bytes.Repeat([]byte{7}, int(r.length))))
	}
	c := dial(t, f.start(t), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	p := make([]byte, 4096)
	if err := c.ReadAt(ctx, p, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want the context's deadline", err)
	}
	close(release)
	q := make([]byte, 512)
	if err := c.ReadAt(testCtx(t), q, 8192); err != nil || q[0] != 7 {
		t.Fatalf("next read: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if !bytes.Equal(p, make([]byte, 4096)) {
		t.Error("the late reply was written into the abandoned buffer")
	}
}

func TestCloseAnswersInFlight(t *testing.T) {
	f := &fakeServer{size: 1 << 20, structured: true}
	f.handle = func(w io.Writer, r fakeRequest) {
		time.Sleep(200 * time.Millisecond)
		w.Write(holeChunk(r.cookie, true, r.off, r.length))
	}
	c := dial(t, f.start(t), Options{})
	errc := make(chan error)
	go func() { errc <- c.ReadAt(context.Background(), make([]byte, 512), 0) }()
	time.Sleep(50 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("read in flight at Close: %v", err)
	}
	if err := c.ReadAt(context.Background(), make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v; want ErrClosed", err)
	}
}

// A server shutting down (ESHUTDOWN) is left: the client disconnects and
// later requests fail with ErrClosed.
func TestServerShutdown(t *testing.T) {
	f := &fakeServer{size: 1 << 20, structured: true}
	f.handle = func(w io.Writer, r fakeRequest) { w.Write(errorChunk(r.cookie, true, uint32(ESHUTDOWN), "bye")) }
	c := dial(t, f.start(t), Options{})
	err := c.ReadAt(testCtx(t), make([]byte, 512), 0)
	if !errors.Is(err, ESHUTDOWN) {
		t.Fatalf("err = %v; want ESHUTDOWN", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(err, ErrClosed) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		err = c.ReadAt(testCtx(t), make([]byte, 512), 0)
	}
	if !errors.Is(err, ErrClosed) {
		t.Errorf("after ESHUTDOWN: %v; want ErrClosed", err)
	}
}
