package nbd

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// CopyOptions tune Copy.
type CopyOptions struct {
	// RequestSize is the length of each read; 0 means 256 KiB. It is
	// rounded to the export's preferred block size and capped at
	// MaxRequest. Larger is not faster: a buffer that stays in the CPU's
	// cache between the read and the write to dst is (1 MiB took twice
	// as long as 256 KiB to copy 1 GiB into the page cache).
	RequestSize int
	// InFlight is how many reads are in flight at once, over all
	// connections; 0 means 16. Each holds a buffer of RequestSize.
	InFlight int
	// Connections is how many connections to spread the reads over, c
	// included; 0 means 1. Copy opens the others (Clone) and closes them;
	// it opens none when the export lacks NBD_FLAG_CAN_MULTI_CONN.
	Connections int
	// Dirty, if set, names a metadata context negotiated on c whose
	// extents flagged StateDirty are the only ones copied, such as
	// "qemu:dirty-bitmap:NAME" for an incremental backup.
	Dirty string
	// DstNotZero says dst may hold old data where the export now reads as
	// zeroes: Copy then writes zeroes there (with dst's ZeroAt when it
	// has one) instead of skipping them. Leave it false for a fresh
	// sparse file of the export's size.
	DstNotZero bool
	// Progress, if set, is called with the length of each range written
	// to dst. Calls do not overlap.
	Progress func(n int64)
}

// ZeroerAt is a destination that can make a range read as zeroes
// cheaply, such as by punching a hole.
type ZeroerAt interface {
	ZeroAt(off, n int64) error
}

// copyJob is one range for a worker: read and write it, or zero it.
type copyJob struct {
	off, n uint64
	zero   bool
}

// Copy copies the export c is connected to into dst at the same offsets,
// skipping what reads as zeroes (by base:allocation when negotiated on c,
// and by the holes of each read) and, with opts.Dirty, what is not dirty.
// It keeps opts.InFlight reads in flight and returns the number of bytes
// written to dst. dst should already have the export's size; Copy does not
// extend it over a trailing hole.
func Copy(ctx context.Context, c *Conn, dst io.WriterAt, opts CopyOptions) (int64, error) {
	e := c.Export()
	if opts.Dirty != "" {
		if _, err := c.contextID(opts.Dirty); err != nil {
			return 0, c.opErr("copy", 0, e.Size, err)
		}
	}
	reqSize := uint64(opts.RequestSize)
	if reqSize == 0 {
		reqSize = 256 << 10
	}
	pref := uint64(max(e.BlockSize.Preferred, e.BlockSize.Min))
	reqSize = min(max(reqSize/pref*pref, pref), uint64(c.maxPayload))
	inFlight := opts.InFlight
	if inFlight <= 0 {
		inFlight = 16
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

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan copyJob, inFlight)
	var written atomic.Int64
	var progressMu sync.Mutex
	wrote := func(n uint64) {
		written.Add(int64(n))
		if opts.Progress != nil {
			progressMu.Lock()
			opts.Progress(int64(n))
			progressMu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for i := range inFlight {
		wg.Go(func() {
			w := copyWorker{conn: conns[i%len(conns)], dst: dst, buf: make([]byte, reqSize), opts: &opts, wrote: wrote}
			for job := range jobs {
				if err := w.do(ctx, job); err != nil {
					cancel(err)
				}
			}
		})
	}
	_, canZero := dst.(ZeroerAt)
	err := planCopy(ctx, c, opts, reqSize, canZero, jobs)
	if err != nil {
		cancel(err)
	}
	close(jobs)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		err = cause // the first error, of a worker or of the plan
	}
	return written.Load(), err
}

// planCopy walks the export a window at a time, asking block status for
// what to copy, and queues the jobs.
func planCopy(ctx context.Context, c *Conn, opts CopyOptions, reqSize uint64, canZero bool, jobs chan<- copyJob) error {
	const window = 1 << 30
	size := c.export.Size
	_, errAlloc := c.contextID(ContextAllocation)
	for off := uint64(0); off < size; off += window {
		n := min(window, size-off)
		plan := []Extent{{Offset: off, Length: n}} // Flags: StateZero where zero
		if errAlloc == nil {
			exts, err := c.BlockStatus(ctx, ContextAllocation, off, n)
			if err != nil {
				return err
			}
			plan = exts
		}
		if opts.Dirty != "" {
			dirty, err := c.BlockStatus(ctx, opts.Dirty, off, n)
			if err != nil {
				return err
			}
			plan = intersect(plan, dirty)
		}
		for _, ext := range plan {
			zero := ext.Flags&StateZero != 0
			if zero && !opts.DstNotZero {
				continue
			}
			step := reqSize
			if zero && canZero {
				step = ext.Length // one ZeroAt; else workers share writing zeroes
			}
			for o := ext.Offset; o < ext.End(); o += step {
				select {
				case jobs <- copyJob{off: o, n: min(step, ext.End()-o), zero: zero}:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
		}
	}
	return nil
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

type copyWorker struct {
	conn  *Conn
	dst   io.WriterAt
	buf   []byte
	opts  *CopyOptions
	wrote func(n uint64)
}

func (w *copyWorker) do(ctx context.Context, job copyJob) error {
	if ctx.Err() != nil {
		return nil
	}
	if job.zero {
		return w.zero(job.off, job.n)
	}
	p := w.buf[:job.n]
	holes, err := w.conn.ReadAtSparse(ctx, p, job.off)
	if err != nil {
		return err
	}
	if w.opts.DstNotZero {
		holes = nil
	}
	// Write what lies between the holes.
	pos := job.off
	for _, h := range append(holes, Extent{Offset: job.off + job.n}) {
		if h.Offset > pos {
			if _, err := w.dst.WriteAt(p[pos-job.off:h.Offset-job.off], int64(pos)); err != nil {
				return fmt.Errorf("nbd: copy of export %q: writing at offset %d: %w", w.conn.export.Name, pos, err)
			}
			w.wrote(h.Offset - pos)
		}
		pos = h.End()
	}
	return nil
}

func (w *copyWorker) zero(off, n uint64) error {
	if z, ok := w.dst.(ZeroerAt); ok {
		if err := z.ZeroAt(int64(off), int64(n)); err != nil {
			return fmt.Errorf("nbd: copy of export %q: zeroing at offset %d: %w", w.conn.export.Name, off, err)
		}
		w.wrote(n)
		return nil
	}
	clear(w.buf)
	for o := off; o < off+n; {
		l := min(uint64(len(w.buf)), off+n-o)
		if _, err := w.dst.WriteAt(w.buf[:l], int64(o)); err != nil {
			return fmt.Errorf("nbd: copy of export %q: writing zeroes at offset %d: %w", w.conn.export.Name, o, err)
		}
		w.wrote(l)
		o += l
	}
	return nil
}
