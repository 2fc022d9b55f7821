package fetch

import (
	"context"
	"sync"
	"sync/atomic"
)

// copyExtents copies the plan from the export to the target with a bounded
// number of requests in flight (spread over the source's connections), so
// memory stays at InFlight × Request whatever the disk's size.
func copyExtents(ctx context.Context, src *source, dst target, p plan, opts Options, done *atomic.Uint64, res *DiskResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := uint64(opts.Request)
	if max := uint64(src.conns[0].MaxRequest()); max > 0 && req > max {
		req = max
	}
	work := make(chan piece)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		copied   atomic.Uint64
		zeroed   atomic.Uint64
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	for w := 0; w < opts.InFlight; w++ {
		conn := src.conns[w%len(src.conns)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, req)
			for x := range work {
				if x.zero {
					if err := dst.zero(ctx, x.off, x.len); err != nil {
						fail(err)
						return
					}
					zeroed.Add(x.len)
					done.Add(x.len)
					continue
				}
				b := buf[:x.len]
				if err := conn.ReadAt(ctx, b, x.off); err != nil {
					fail(err)
					return
				}
				if err := dst.writeAt(ctx, b, x.off); err != nil {
					fail(err)
					return
				}
				copied.Add(x.len)
				done.Add(x.len)
			}
		}()
	}
feed:
	for _, x := range p {
		step := req
		if x.zero {
			step = 1 << 30 // one zeroing request covers a large range cheaply
		}
		for off := x.off; off < x.off+x.len; off += step {
			n := min(step, x.off+x.len-off)
			select {
			case work <- piece{off: off, len: n, zero: x.zero}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(work)
	wg.Wait()
	res.Copied, res.Zeroed = copied.Load(), zeroed.Load()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
