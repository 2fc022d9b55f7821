package fetch

import (
	"context"
	"sync/atomic"

	"vbackup/nbd"
)

// copyDisk copies what the plan says from the export into the target with
// nbd.CopyPieces: Request-sized reads, InFlight of them at once, spread
// over the source's connections, so memory stays at InFlight × Request
// whatever the disk's size. The plan is walked twice, first for the total
// that progress reports against, then for the copy itself.
func (j *diskJob) copyDisk(ctx context.Context, src *source, dst target) error {
	fitted := func() plan { return dst.fit(wanted(ctx, src.conns[0], j.disk.Bitmap)) }
	var total uint64
	for x, err := range fitted() {
		if err != nil {
			return err
		}
		total += x.len
	}
	j.total.Store(total)

	var (
		copied, zeroed atomic.Uint64
		extents        int
		last           piece
	)
	counted := func(yield func(piece, error) bool) {
		for x, err := range fitted() {
			if err == nil {
				if x.off != last.end() || x.zero != last.zero || extents == 0 {
					extents++ // not a continuation of a piece cut for length
				}
				last = x
				if x.zero { // the target is new: zero pieces cost no write
					zeroed.Add(x.len)
					j.done.Add(x.len)
				}
			}
			if !yield(x, err) {
				return
			}
		}
	}
	_, err := nbd.CopyPieces(ctx, src.conns, dst, dst.layout(counted), nbd.CopyOptions{
		RequestSize: j.opts.Request,
		InFlight:    j.opts.InFlight,
		Progress: func(n int64) {
			copied.Add(uint64(n))
			j.done.Add(uint64(n))
		},
	})
	j.result.Copied, j.result.Zeroed, j.result.Extents = copied.Load(), zeroed.Load(), extents
	return err
}
