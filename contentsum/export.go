package contentsum

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"vbackup/nbd"
	"vbackup/qemunbd"
)

// Options tune Export and File.
type Options struct {
	// Connections is how many connections to spread the reads over; 0
	// means 4. Only one is opened when the export does not advertise
	// NBD_FLAG_CAN_MULTI_CONN; File opens at most qemunbd.Shared.
	Connections int
	// InFlight is how many chunk reads are in flight at once, over all
	// connections; 0 means 16. Chunks are hashed by max(InFlight,
	// GOMAXPROCS) workers, each holding a 1 MiB buffer: that, and not
	// the disk's size, bounds the memory used.
	InFlight int
	// Progress, if set, is called as chunks are summed, in order, with
	// the bytes summed so far and the export's size. Calls do not overlap.
	Progress func(done, total uint64)
	// Digests, if set, receives every chunk digest, 32 bytes each, in
	// order: what Update reuses for the chunks that did not change.
	Digests io.Writer

	// Earlier, if set, is an earlier state of the same disk: only the
	// chunks that touch a range changed since are read; the others'
	// digests are taken from it. Ignored when the size differs.
	Earlier *Earlier
}

// File computes the checksum of the disk image at path, of the given
// format (raw, qcow2, ...), with its backing chain: what the image's
// guest would read. It serves the image with qemu-nbd (see qemunbd.Serve)
// and reads it as Export does. The size is the virtual size as QEMU sees
// it, which rounds a raw file's length up to a multiple of 512.
func File(ctx context.Context, path, format string, opts Options) (Sum, error) {
	srv, err := qemunbd.Serve(ctx, path, format)
	if err != nil {
		return Sum{}, err // it names the image
	}
	opts.Connections = min(connections(opts), qemunbd.Shared)
	sum, _, err := export(ctx, srv.URI(), path, opts)
	if cerr := srv.Close(); err == nil && cerr != nil {
		return Sum{}, cerr
	}
	return sum, err
}

// Export computes the checksum of the NBD export at uri (see nbd.Dial). It
// reads only the ranges that the base:allocation metadata context does not
// report as reading as zeroes, with opts.InFlight reads in flight, and
// hashes chunks in parallel.
func Export(ctx context.Context, uri string, opts Options) (Sum, error) {
	sum, _, err := export(ctx, uri, uri, opts)
	return sum, err
}

func connections(opts Options) int {
	if opts.Connections <= 0 {
		return 4
	}
	return opts.Connections
}

// job is the unit of work and of order: one chunk with data to read, or a
// run of chunks that read as zeroes. Its digest is ready when done closes.
type job struct {
	off, len uint64
	data     []nbd.Extent // the parts to read; none: all zeroes
	digest   [32]byte     // of the one chunk, when it has data
	known    bool         // digest was known without reading (Update)
	done     chan struct{}
}

// export is Export, with name in errors, also returning the bytes it read.
func export(ctx context.Context, uri, name string, opts Options) (Sum, uint64, error) {
	fail := func(err error) (Sum, uint64, error) {
		return Sum{}, 0, fmt.Errorf("contentsum: %s: %w", name, err)
	}
	conns, err := nbd.DialMulti(ctx, uri, nbd.Options{MetaContexts: []string{nbd.ContextAllocation}}, connections(opts))
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	size := conns[0].Export().Size
	inFlight := opts.InFlight
	if inFlight <= 0 {
		inFlight = 16
	}
	workers := max(inFlight, runtime.GOMAXPROCS(0))

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// order holds every job, in order, for the summer below; its capacity
	// is how far the workers may get ahead of the oldest unfinished chunk.
	order := make(chan *job, 2*workers)
	work := make(chan *job)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(order)
		defer close(work)
		if err := plan(ctx, conns[0], size, opts.Earlier.known(size), order, work); err != nil {
			cancel(err)
		}
	})
	var read atomic.Uint64
	reads := make(chan struct{}, inFlight)
	for i := range workers {
		wg.Go(func() {
			c, buf := conns[i%len(conns)], make([]byte, ChunkSize)
			for r := range work {
				n, err := r.sum(ctx, c, buf, reads)
				if err != nil {
					cancel(err)
					return
				}
				read.Add(n)
			}
		})
	}

	l := newDigestList()
	l.out = opts.Digests
	var done uint64
	for r := range order {
		if r.known {
			l.add(r.digest)
		} else if r.data == nil {
			for off := r.off; off < r.off+r.len; off += ChunkSize {
				l.add(zeroDigest(min(ChunkSize, size-off)))
			}
		} else {
			select {
			case <-r.done:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			l.add(r.digest)
		}
		done += r.len
		if opts.Progress != nil {
			opts.Progress(done, size)
		}
	}
	cancel(nil)
	wg.Wait()
	if done == size && l.err != nil {
		return fail(fmt.Errorf("writing the chunk digests: %w", l.err))
	}
	if done < size {
		err := context.Cause(ctx)
		if _, ok := errors.AsType[*nbd.Error](err); !ok {
			err = fmt.Errorf("at offset %d: %w", done, err) // an nbd.Error names its own
		}
		return fail(err)
	}
	return l.sum(size), read.Load(), nil
}

// plan walks the export's allocation a window at a time and sends every
// job to order, and each one with data to work too.
func plan(ctx context.Context, c *nbd.Conn, size uint64, known func(uint64) ([32]byte, bool, error), order, work chan<- *job) error {
	send := func(ch chan<- *job, r *job) error {
		select {
		case ch <- r:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	// A window's extents are all that is held; it is a whole number of
	// chunks, so that no chunk straddles two.
	const window = 1024 * ChunkSize
	hasAlloc := slices.Contains(c.MetaContexts(), nbd.ContextAllocation)
	for wOff := uint64(0); wOff < size; wOff += window {
		wEnd := min(wOff+window, size)
		var exts []nbd.Extent // nothing known to be zero: read it all
		if hasAlloc {
			var err error
			if exts, err = c.BlockStatus(ctx, nbd.ContextAllocation, wOff, wEnd-wOff); err != nil {
				return err
			}
		}
		var zeros *job
		for off := wOff; off < wEnd; off += ChunkSize {
			end := min(off+ChunkSize, wEnd)
			for len(exts) > 0 && exts[0].End() <= off {
				exts = exts[1:]
			}
			if known != nil {
				d, ok, err := known(off)
				if err != nil {
					return err
				}
				if ok {
					if zeros != nil {
						if err := send(order, zeros); err != nil {
							return err
						}
						zeros = nil
					}
					if err := send(order, &job{off: off, len: end - off, digest: d, known: true}); err != nil {
						return err
					}
					continue
				}
			}
			data := dataIn(exts, off, end)
			if data == nil && zeros != nil {
				zeros.len += end - off
				continue
			}
			if zeros != nil {
				if err := send(order, zeros); err != nil {
					return err
				}
				zeros = nil
			}
			r := &job{off: off, len: end - off, data: data}
			if data == nil {
				zeros = r
				continue
			}
			r.done = make(chan struct{})
			if err := send(order, r); err != nil {
				return err
			}
			if err := send(work, r); err != nil {
				return err
			}
		}
		if zeros != nil {
			if err := send(order, zeros); err != nil {
				return err
			}
		}
	}
	return nil
}

// dataIn lists the parts of [off, end) that no extent flagged StateZero
// covers, joined where they touch; nil when it all reads as zeroes. exts
// are sorted; what they do not describe is data, to be safe. A hole
// without StateZero is data too: NBD does not promise it reads as zeroes.
func dataIn(exts []nbd.Extent, off, end uint64) []nbd.Extent {
	var parts []nbd.Extent
	cur := off
	for _, e := range exts {
		if e.Offset >= end || cur >= end {
			break
		}
		if e.Flags&nbd.StateZero == 0 || e.End() <= cur {
			continue
		}
		if e.Offset > cur {
			parts = append(parts, nbd.Extent{Offset: cur, Length: e.Offset - cur})
		}
		cur = min(e.End(), end)
	}
	if cur < end {
		parts = append(parts, nbd.Extent{Offset: cur, Length: end - cur})
	}
	return parts
}

// sum reads r's data into buf, with zeroes between, and hashes it. reads
// bounds the reads in flight over all workers. It returns the bytes read.
func (r *job) sum(ctx context.Context, c *nbd.Conn, buf []byte, reads chan struct{}) (uint64, error) {
	buf = buf[:r.len]
	select {
	case reads <- struct{}{}:
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
	var n uint64
	pos := r.off
	for _, p := range r.data {
		clear(buf[pos-r.off : p.Offset-r.off])
		if err := c.ReadAt(ctx, buf[p.Offset-r.off:p.End()-r.off], p.Offset); err != nil {
			<-reads
			return 0, err
		}
		n += p.Length
		pos = p.End()
	}
	<-reads
	clear(buf[pos-r.off:])
	r.digest = sha256.Sum256(buf)
	close(r.done)
	return n, nil
}
