package nbd

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
)

// request is one command on the wire, from submit until its reply is
// complete.
type request struct {
	cookie uint64
	cmd    uint16
	flags  uint16
	off    uint64
	length uint32
	buf    []byte // where a read's data goes; len(buf) == length
	// alloc, when set and buf is nil, gives a read its buffer once its
	// reply's first data or hole arrives, so that a request in flight
	// holds no memory. With wait it may wait for a buffer to be free;
	// without, it must not (it makes one). nil from it drops the request
	// (the copy is ending).
	alloc  func(wait bool) []byte
	pooled bool // buf came from alloc; the reader counts it until done

	mu        sync.Mutex // held while buf is written, so that abandon stops it
	abandoned bool

	// Owned by the reader goroutine until done is closed.
	done      chan struct{}
	err       error
	covered   rangeSet // parts of a read that chunks have covered
	wantHoles bool
	holes     []Extent
	extents   map[uint32][]Extent // block status, by context ID
}

// writable readies req.buf for the reply's data, taking it from alloc if
// need be; false means the data is to be dropped. Call with req.mu held.
// The reader waits for a buffer only while no other reply holds one half
// filled: a server may interleave the chunks of its replies, and the one
// that would free a buffer may be one this reader has yet to finish.
func (p *replyParser) writable(req *request) bool {
	if req.abandoned {
		return false
	}
	if req.buf == nil && req.alloc != nil {
		if req.buf = req.alloc(p.partial == 0); req.buf == nil {
			req.abandoned = true
			if req.err == nil {
				req.err = errNoBuffer
			}
			return false
		}
		req.pooled = true
		p.partial++
	}
	return true
}

// complete hands req back to its waiter.
func (p *replyParser) complete(req *request) {
	if req.pooled {
		p.partial--
	}
	p.finish(req)
}

func (req *request) abandon() {
	req.mu.Lock()
	req.abandoned = true
	req.mu.Unlock()
}

// serverError records the first error the server reported for req.
func (p *replyParser) serverError(req *request, e *ServerError) {
	if req.err == nil {
		req.err = e
	}
	if e.Errno == ESHUTDOWN && p.shutdown != nil {
		p.shutdown()
	}
}

// replyParser reads the server's replies in the transmission phase and
// hands each to its request. Any error it returns is fatal to the
// connection: the stream can't be trusted after it.
type replyParser struct {
	r          *bufio.Reader
	structured bool
	contexts   []uint32 // negotiated metadata context IDs
	lookup     func(cookie uint64) *request
	finish     func(*request)
	shutdown   func() // the server said ESHUTDOWN; may be nil
	partial    int    // replies being received into a buffer from alloc
	b          [20]byte
}

func (p *replyParser) next() error {
	if _, err := io.ReadFull(p.r, p.b[:4]); err != nil {
		return err
	}
	switch m := binary.BigEndian.Uint32(p.b[:4]); m {
	case magicSimple:
		return p.simple()
	case magicStructured:
		if !p.structured {
			return protocolErrorf("structured reply chunk, but structured replies were not negotiated")
		}
		return p.chunk()
	default:
		return protocolErrorf("bad reply magic %#08x", m)
	}
}

func (p *replyParser) request(cookie uint64) (*request, error) {
	req := p.lookup(cookie)
	if req == nil {
		return nil, protocolErrorf("reply for cookie %d, which no request in flight has", cookie)
	}
	return req, nil
}

func (p *replyParser) simple() error {
	if _, err := io.ReadFull(p.r, p.b[:12]); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(p.b[0:])
	req, err := p.request(binary.BigEndian.Uint64(p.b[4:]))
	if err != nil {
		return err
	}
	switch {
	case errno != 0:
		// No payload follows an error, so even a READ's error is clear
		// when the server should have sent it structured.
		p.serverError(req, &ServerError{Errno: Errno(errno)})
	case req.cmd == cmdRead && p.structured:
		return protocolErrorf("simple reply to a read after structured replies were negotiated")
	case req.cmd == cmdRead:
		if err := p.readData(req, 0, int(req.length)); err != nil {
			return err
		}
	case req.cmd == cmdBlockStatus:
		return protocolErrorf("simple reply to block status")
	}
	p.complete(req)
	return nil
}

// readData reads n bytes of payload into req.buf at i, or drops them if
// the request was abandoned.
func (p *replyParser) readData(req *request, i, n int) error {
	req.mu.Lock()
	defer req.mu.Unlock()
	if !p.writable(req) {
		_, err := p.r.Discard(n)
		return err
	}
	_, err := io.ReadFull(p.r, req.buf[i:i+n])
	return err
}

func (p *replyParser) chunk() error {
	if _, err := io.ReadFull(p.r, p.b[:16]); err != nil {
		return err
	}
	flags := binary.BigEndian.Uint16(p.b[0:])
	typ := binary.BigEndian.Uint16(p.b[2:])
	length := binary.BigEndian.Uint32(p.b[12:])
	req, err := p.request(binary.BigEndian.Uint64(p.b[4:]))
	if err != nil {
		return err
	}
	switch {
	case typ == chunkNone:
		if length != 0 || flags&replyFlagDone == 0 {
			return protocolErrorf("NBD_REPLY_TYPE_NONE chunk with length %d, flags %#x", length, flags)
		}
	case typ == chunkOffsetData || typ == chunkOffsetHole:
		err = p.content(req, typ, length)
	case typ == chunkBlockStatus:
		err = p.blockStatus(req, length)
	case typ&chunkErrorBit != 0:
		err = p.errorChunk(req, typ, length)
	default:
		err = protocolErrorf("unknown reply chunk type %d", typ)
	}
	if err != nil {
		return err
	}
	if flags&replyFlagDone != 0 {
		p.done(req)
	}
	return nil
}

// content reads a data or hole chunk of a read.
func (p *replyParser) content(req *request, typ uint16, length uint32) error {
	if req.cmd != cmdRead {
		return protocolErrorf("read data chunk in the reply to %s", cmdNames[req.cmd])
	}
	if (typ == chunkOffsetData && length < 9) || (typ == chunkOffsetHole && length != 12) {
		return protocolErrorf("chunk type %d of length %d", typ, length)
	}
	if _, err := io.ReadFull(p.r, p.b[:8]); err != nil {
		return err
	}
	off := binary.BigEndian.Uint64(p.b[:8])
	n := uint64(length - 8)
	if typ == chunkOffsetHole {
		if _, err := io.ReadFull(p.r, p.b[:4]); err != nil {
			return err
		}
		n = uint64(binary.BigEndian.Uint32(p.b[:4]))
		if n == 0 {
			return protocolErrorf("hole chunk of size 0")
		}
	}
	if off < req.off || off-req.off > uint64(req.length) || n > uint64(req.length)-(off-req.off) {
		return protocolErrorf("chunk for offset %d (%d bytes) outside the read at offset %d (%d bytes)",
			off, n, req.off, req.length)
	}
	i := off - req.off
	if !req.covered.add(i, i+n) {
		return protocolErrorf("chunk for offset %d (%d bytes) overlaps an earlier one", off, n)
	}
	if typ == chunkOffsetData {
		return p.readData(req, int(i), int(n))
	}
	req.mu.Lock()
	if p.writable(req) {
		clear(req.buf[i : i+n])
	}
	req.mu.Unlock()
	if req.wantHoles {
		req.holes = append(req.holes, Extent{Offset: off, Length: n, Flags: StateHole | StateZero})
	}
	return nil
}

func (p *replyParser) blockStatus(req *request, length uint32) error {
	if req.cmd != cmdBlockStatus {
		return protocolErrorf("block status chunk in the reply to %s", cmdNames[req.cmd])
	}
	if length < 12 || (length-4)%8 != 0 || length > maxStatusPayload {
		return protocolErrorf("block status chunk of length %d", length)
	}
	if _, err := io.ReadFull(p.r, p.b[:4]); err != nil {
		return err
	}
	id := binary.BigEndian.Uint32(p.b[:4])
	if !slices.Contains(p.contexts, id) {
		return protocolErrorf("block status for context ID %d, which was not negotiated", id)
	}
	if _, dup := req.extents[id]; dup {
		return protocolErrorf("two block status chunks for context ID %d", id)
	}
	count := (length - 4) / 8
	if req.flags&cmdFlagReqOne != 0 && count != 1 {
		return protocolErrorf("%d extents in reply to a one-extent block status", count)
	}
	var exts []Extent
	off := req.off
	for range count {
		if _, err := io.ReadFull(p.r, p.b[:8]); err != nil {
			return err
		}
		n := uint64(binary.BigEndian.Uint32(p.b[:8]))
		if n == 0 {
			return protocolErrorf("block status extent of length 0")
		}
		if off-req.off >= uint64(req.length) {
			return protocolErrorf("block status extents go on past the requested %d bytes", req.length)
		}
		if req.flags&cmdFlagReqOne != 0 && n > uint64(req.length) {
			return protocolErrorf("one-extent block status of %d bytes for %d asked", n, req.length)
		}
		exts = append(exts, Extent{Offset: off, Length: n, Flags: binary.BigEndian.Uint32(p.b[4:8])})
		off += n
	}
	if req.extents == nil {
		req.extents = map[uint32][]Extent{}
	}
	req.extents[id] = exts
	return nil
}

func (p *replyParser) errorChunk(req *request, typ uint16, length uint32) error {
	if length < 6 {
		return protocolErrorf("error chunk of length %d", length)
	}
	if _, err := io.ReadFull(p.r, p.b[:6]); err != nil {
		return err
	}
	e := &ServerError{Errno: Errno(binary.BigEndian.Uint32(p.b[:4]))}
	msgLen := uint32(binary.BigEndian.Uint16(p.b[4:6]))
	rest := length - 6
	if msgLen > rest || (typ == chunkErrorOffset && rest-msgLen < 8) {
		return protocolErrorf("error chunk message of %d bytes in a chunk of %d", msgLen, length)
	}
	msg := make([]byte, msgLen)
	if _, err := io.ReadFull(p.r, msg); err != nil {
		return err
	}
	e.Message = string(msg)
	rest -= msgLen
	if typ == chunkErrorOffset {
		if _, err := io.ReadFull(p.r, p.b[:8]); err != nil {
			return err
		}
		e.Offset, e.HasOffset = binary.BigEndian.Uint64(p.b[:8]), true
		rest -= 8
	}
	// Fields of error types we don't know, after the message.
	if _, err := p.r.Discard(int(rest)); err != nil {
		return err
	}
	p.serverError(req, e)
	return nil
}

// done checks that a reply that claims success said all it must, and
// completes req.
func (p *replyParser) done(req *request) {
	if req.err == nil {
		switch req.cmd {
		case cmdRead:
			if req.covered.total != uint64(req.length) {
				req.err = protocolErrorf("server claimed success but sent %d of the %d bytes",
					req.covered.total, req.length)
			}
		case cmdBlockStatus:
			for _, id := range p.contexts {
				if _, ok := req.extents[id]; !ok {
					req.err = protocolErrorf("no block status for context ID %d", id)
				}
			}
		}
	}
	p.complete(req)
}

// rangeSet is a set of disjoint byte ranges [start, end), kept sorted and
// merged; servers mostly send a read's chunks in order, so it stays short.
type rangeSet struct {
	r     [][2]uint64
	total uint64
}

// add adds [a, b) unless it overlaps what is there, and says whether it did.
func (s *rangeSet) add(a, b uint64) bool {
	i, _ := slices.BinarySearchFunc(s.r, a, func(r [2]uint64, a uint64) int {
		if r[1] <= a {
			return -1
		}
		return 1
	})
	if i < len(s.r) && s.r[i][0] < b {
		return false
	}
	s.total += b - a
	left := i > 0 && s.r[i-1][1] == a
	right := i < len(s.r) && s.r[i][0] == b
	switch {
	case left && right:
		s.r[i-1][1] = s.r[i][1]
		s.r = slices.Delete(s.r, i, i+1)
	case left:
		s.r[i-1][1] = b
	case right:
		s.r[i][0] = a
	default:
		s.r = slices.Insert(s.r, i, [2]uint64{a, b})
	}
	return true
}

func (s rangeSet) String() string { return fmt.Sprint(s.r) }
