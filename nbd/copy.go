package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"
	"sync/atomic"
)

// CopyOptions tune Copy and CopyPieces.
type CopyOptions struct {
	// RequestSize is the length of each read; 0 means 256 KiB. It is
	// rounded to the export's preferred block size and capped at
	// MaxRequest. Larger is not faster: a buffer that stays in the CPU's
	// cache between the read and the write to dst is (1 MiB took twice
	// as long as 256 KiB to copy 1 GiB into the page cache).
	RequestSize int
	// InFlight is how many reads are in flight at once, over all
	// connections; 0 means 16. A read in flight holds no buffer until
	// its reply arrives.
	InFlight int
	// Buffers is how many buffers of RequestSize the copy keeps, for
	// replies being received and data being written; 0 means 32. A reply
	// that finds none waits (and the server with it) until a write is
	// done, so memory stays at about Buffers × RequestSize whatever
	// InFlight: more only while a server interleaves the chunks of
	// several replies (the reader then cannot wait) or for reads not
	// aligned to the block size.
	Buffers int
	// Connections is how many connections Copy spreads the reads over, c
	// included; 0 means 1. Copy opens the others (Clone) and closes them;
	// it opens none when the export lacks NBD_FLAG_CAN_MULTI_CONN.
	// CopyPieces uses the connections it is given instead.
	Connections int
	// Dirty, if set, names a metadata context negotiated on c whose
	// extents flagged StateDirty are the only ones Copy copies, such as
	// "qemu:dirty-bitmap:NAME" for an incremental backup. CopyPieces
	// copies the pieces it is given instead.
	Dirty string
	// DstNotZero says dst may hold old data where the export now reads as
	// zeroes: Copy then writes zeroes there (with dst's ZeroAt when it
	// has one) instead of skipping them, and both write the holes of each
	// read. Leave it false for a fresh sparse file.
	DstNotZero bool
	// Progress, if set, is called with the length of each part of a piece
	// done: read (its holes included) and written, or zeroed. Calls do not
	// overlap.
	Progress func(n int64)
	// Written, if set, is told what each read of the export left in dst,
	// at the export's offsets: n bytes of data at off once dst's WriteAt
	// has taken them, or, with data nil, a hole of the read that was not
	// written (without DstNotZero: a fresh dst reads as zeroes there). It
	// is for summing a copy as it goes rather than reading it back; it is
	// called from several goroutines at once and must not keep data.
	Written func(off, n uint64, data []byte)
	// Limit, if set, caps the rate of the reads: each data read waits for
	// its length before it is sent, and what comes back as holes is
	// given back. Zero pieces are never read and cost nothing. One
	// Limiter shared by several copies caps them together.
	Limit *Limiter
}

// ZeroerAt is a destination that can make a range read as zeroes
// cheaply, such as by punching a hole.
type ZeroerAt interface {
	ZeroAt(off, n int64) error
}

// A Piece is a range of the export to copy and where it goes in the
// destination, for CopyPieces.
type Piece struct {
	Offset, Length uint64 // the range of the export
	To             uint64 // the destination's offset for Offset
	Zero           bool   // make the destination read as zeroes there, without reading the export
}

// Copy copies the export c is connected to into dst at the same offsets,
// skipping what reads as zeroes (by base:allocation when negotiated on c,
// and by the holes of each read) and, with opts.Dirty, what is not dirty.
// It keeps opts.InFlight reads in flight and returns the number of bytes
// written to dst. dst should already have the export's size; Copy does not
// extend it over a trailing hole. Its memory does not grow with the export:
// it asks block status a window at a time, as it goes.
func Copy(ctx context.Context, c *Conn, dst io.WriterAt, opts CopyOptions) (int64, error) {
	e := c.Export()
	if opts.Dirty != "" {
		if _, err := c.contextID(opts.Dirty); err != nil {
			return 0, c.opErr("copy", 0, e.Size, err)
		}
	}
	conns := []*Conn{c}
	if opts.Connections > 1 && e.Flags.CanMultiConn() {
		more, err := c.clones(ctx, opts.Connections-1)
		if err != nil {
			return 0, err
		}
		defer func() {
			for _, cc := range more {
				cc.Close()
			}
		}()
		conns = append(conns, more...)
	}
	pieces := func(yield func(Piece, error) bool) {
		for ext, err := range c.Extents(ctx, opts.Dirty) {
			if err != nil {
				yield(Piece{}, err)
				return
			}
			zero := ext.Flags&StateZero != 0
			if zero && !opts.DstNotZero {
				continue
			}
			if !yield(Piece{Offset: ext.Offset, Length: ext.Length, To: ext.Offset, Zero: zero}, nil) {
				return
			}
		}
	}
	return CopyPieces(ctx, conns, dst, pieces, opts)
}

// Extents yields the extents of the export in order, asking block status
// a window at a time as it goes: those of base:allocation, flagged
// StateZero where they read as zeroes (the whole export as data when
// base:allocation was not negotiated), and with dirty set, only their
// parts that the metadata context dirty flags StateDirty.
func (c *Conn) Extents(ctx context.Context, dirty string) iter.Seq2[Extent, error] {
	return func(yield func(Extent, error) bool) {
		const window = 1 << 30
		size := c.export.Size
		_, errAlloc := c.contextID(ContextAllocation)
		for off := uint64(0); off < size; off += window {
			n := min(window, size-off)
			exts := []Extent{{Offset: off, Length: n}}
			if errAlloc == nil {
				var err error
				if exts, err = c.BlockStatus(ctx, ContextAllocation, off, n); err != nil {
					yield(Extent{}, err)
					return
				}
			}
			if dirty != "" {
				d, err := c.BlockStatus(ctx, dirty, off, n)
				if err != nil {
					yield(Extent{}, err)
					return
				}
				exts = intersect(exts, d)
			}
			for _, e := range exts {
				if !yield(e, nil) {
					return
				}
			}
		}
	}
}

// intersect keeps the parts of alloc that dirty flags StateDirty.
func intersect(alloc, dirty []Extent) []Extent {
	var out []Extent
	i := 0
	for _, d := range dirty {
		if d.Flags&StateDirty == 0 {
			continue
		}
		for ; i < len(alloc) && alloc[i].End() <= d.Offset; i++ {
		}
		for j := i; j < len(alloc) && alloc[j].Offset < d.End(); j++ {
			s, t := max(alloc[j].Offset, d.Offset), min(alloc[j].End(), d.End())
			out = append(out, Extent{Offset: s, Length: t - s, Flags: alloc[j].Flags})
		}
	}
	return out
}

// CopyPieces is the loop of Copy, for a caller that chooses what to copy
// and where it goes, such as an image format's layout: it copies each
// piece the sequence yields, in order, from the export into dst at the
// piece's To, with opts.InFlight requests of opts.RequestSize in flight,
// spread over conns (one or more, all connected to the same export). A
// data piece is read and written; a zero piece is never read but zeroed
// in dst (ZeroAt when dst has it). The sequence is consumed as the copy
// goes, on the calling goroutine, so that a caller can lay out a piece
// just before it is copied. CopyPieces returns the number of bytes
// written to dst.
func CopyPieces(ctx context.Context, conns []*Conn, dst io.WriterAt, pieces iter.Seq2[Piece, error], opts CopyOptions) (int64, error) {
	e := conns[0].Export()
	reqSize := uint64(opts.RequestSize)
	if reqSize == 0 {
		reqSize = 256 << 10
	}
	pref := uint64(max(e.BlockSize.Preferred, e.BlockSize.Min))
	reqSize = min(max(reqSize/pref*pref, pref), uint64(conns[0].maxPayload))
	inFlight := opts.InFlight
	if inFlight <= 0 {
		inFlight = 16
	}

	buffers := opts.Buffers
	if buffers <= 0 {
		buffers = 32
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pool := newBufferPool(ctx, buffers, int(reqSize))
	jobs := make(chan Piece, inFlight)
	var written atomic.Int64
	var progressMu sync.Mutex
	done := func(n uint64) {
		if opts.Progress != nil {
			progressMu.Lock()
			opts.Progress(int64(n))
			progressMu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for i := range inFlight {
		wg.Go(func() {
			w := copyWorker{conn: conns[i%len(conns)], dst: dst, pool: pool, opts: &opts, written: &written, done: done}
			for job := range jobs {
				if err := w.do(ctx, job); err != nil {
					cancel(err)
				}
			}
		})
	}
	_, canZero := dst.(ZeroerAt)
	err := feed(ctx, pieces, reqSize, canZero, jobs)
	if err != nil {
		cancel(err)
	}
	close(jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		err = cause // the first error, of a worker or of the pieces
	}
	return written.Load(), err
}

// feed cuts the pieces into jobs for the workers: reads of at most
// reqSize, and zero pieces whole when dst can zero cheaply.
func feed(ctx context.Context, pieces iter.Seq2[Piece, error], reqSize uint64, canZero bool, jobs chan<- Piece) error {
	for p, err := range pieces {
		if err != nil {
			return err
		}
		step := reqSize
		if p.Zero && canZero {
			step = p.Length // one ZeroAt; else workers share writing zeroes
		}
		for o := uint64(0); o < p.Length; o += step {
			job := Piece{Offset: p.Offset + o, Length: min(step, p.Length-o), To: p.To + o, Zero: p.Zero}
			select {
			case jobs <- job:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	return nil
}

type copyWorker struct {
	conn    *Conn
	dst     io.WriterAt
	pool    *bufferPool
	opts    *CopyOptions
	written *atomic.Int64
	done    func(n uint64)
}

func (w *copyWorker) do(ctx context.Context, job Piece) error {
	if ctx.Err() != nil {
		return nil
	}
	if job.Zero {
		return w.zero(job.To, job.Length)
	}
	if err := w.opts.Limit.Take(ctx, job.Length); err != nil {
		return err
	}
	p, holes, err := w.read(ctx, job)
	if err != nil {
		return err
	}
	for _, h := range holes {
		w.opts.Limit.Give(h.Length) // not sent: moved no data
	}
	defer w.pool.put(p)
	if w.opts.DstNotZero {
		holes = nil
	}
	// Write what lies between the holes.
	pos := job.Offset
	for _, h := range append(holes, Extent{Offset: job.Offset + job.Length}) {
		if w.opts.Written != nil && h.Length > 0 {
			w.opts.Written(h.Offset, h.Length, nil)
		}
		if h.Offset > pos {
			at := job.To + (pos - job.Offset)
			part := p[pos-job.Offset : h.Offset-job.Offset]
			if _, err := w.dst.WriteAt(part, int64(at)); err != nil {
				return fmt.Errorf("nbd: copy of export %q: writing at offset %d: %w", w.conn.export.Name, at, err)
			}
			if w.opts.Written != nil {
				w.opts.Written(pos, uint64(len(part)), part)
			}
			w.written.Add(int64(h.Offset - pos))
		}
		pos = h.End()
	}
	w.done(job.Length)
	return nil
}

// read reads a job's range into a buffer of the pool, which the caller
// puts back, and returns the holes in it. The buffer is taken only when
// the reply arrives.
func (w *copyWorker) read(ctx context.Context, job Piece) ([]byte, []Extent, error) {
	c := w.conn
	if a := uint64(c.export.BlockSize.Min); (job.Offset|job.Length)%a != 0 {
		// ReadAtSparse widens an unaligned read to the block size (rare:
		// only at the edges of extents that are not aligned). Its buffer
		// is not the pool's, which it would hold while it waits.
		buf := make([]byte, job.Length)
		holes, err := c.ReadAtSparse(ctx, buf, job.Offset)
		if err != nil {
			return nil, nil, err
		}
		return buf, holes, nil
	}
	if err := c.check("read", job.Offset, job.Length, false); err != nil {
		return nil, nil, err
	}
	req := &request{cmd: cmdRead, off: job.Offset, length: uint32(job.Length), wantHoles: true, alloc: func(wait bool) []byte {
		if b := w.pool.get(wait); b != nil {
			return b[:job.Length]
		}
		return nil
	}}
	if err := c.submit(ctx, req, nil); err != nil {
		return nil, nil, c.opErr("read", job.Offset, job.Length, err)
	}
	err := c.wait(ctx, req)
	req.mu.Lock() // after abandon, the reader no longer takes a buffer
	buf := req.buf
	req.mu.Unlock()
	if err != nil {
		w.pool.put(buf)
		return nil, nil, c.opErr("read", job.Offset, job.Length, err)
	}
	return buf, mergeExtents(req.holes), nil
}

func (w *copyWorker) zero(off, n uint64) error {
	if z, ok := w.dst.(ZeroerAt); ok {
		if err := z.ZeroAt(int64(off), int64(n)); err != nil {
			return fmt.Errorf("nbd: copy of export %q: zeroing at offset %d: %w", w.conn.export.Name, off, err)
		}
		w.written.Add(int64(n))
		w.done(n)
		return nil
	}
	buf := w.pool.get(true)
	if buf == nil {
		return nil // the copy is ending
	}
	defer w.pool.put(buf)
	clear(buf)
	for o := off; o < off+n; {
		l := min(uint64(len(buf)), off+n-o)
		if _, err := w.dst.WriteAt(buf[:l], int64(o)); err != nil {
			return fmt.Errorf("nbd: copy of export %q: writing zeroes at offset %d: %w", w.conn.export.Name, o, err)
		}
		w.written.Add(int64(l))
		o += l
	}
	w.done(n)
	return nil
}

// errNoBuffer ends a read whose reply came as the copy was ending.
var errNoBuffer = errors.New("nbd: the copy ended before the read's data arrived")

// bufferPool keeps n buffers of one size, made as first needed. A reader
// that must not wait gets a new one when none is free; the pool keeps no
// more than n of those put back.
type bufferPool struct {
	ctx  context.Context
	free chan []byte // buffers, and nil for those not made yet
	size int
}

func newBufferPool(ctx context.Context, n, size int) *bufferPool {
	p := &bufferPool{ctx: ctx, free: make(chan []byte, n), size: size}
	for range n {
		p.free <- nil
	}
	return p
}

// get returns a buffer: with wait, it waits for one to be free (nil when
// ctx ends first); without, it makes one when none is free.
func (p *bufferPool) get(wait bool) []byte {
	var b []byte
	if wait {
		select {
		case b = <-p.free:
		case <-p.ctx.Done():
			return nil
		}
	} else {
		select {
		case b = <-p.free:
		case <-p.ctx.Done():
			return nil
		default:
		}
	}
	if b == nil {
		b = make([]byte, p.size)
	}
	return b
}

func (p *bufferPool) put(b []byte) {
	if b == nil {
		return
	}
	select {
	case p.free <- b[:cap(b)]:
	default: // one made for a reader that could not wait
	}
}
