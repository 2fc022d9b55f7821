package fetch

import (
	"cmp"
	"context"
	"sync/atomic"

	"vbackup/nbd"
)

// perConnection is how many requests are kept in flight on each
// connection by default: as many as QEMU's NBD server works on at once
// for one client (MAX_NBD_REQUESTS). On a 2 GiB fetch from a backup
// export, over 4 connections, 8 each made QEMU use about 40 % more CPU
// (its coroutines went idle and were woken again between requests) and
// the fetch 10-20 % slower; 32 each was no faster than 16.
const perConnection = 16

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
		InFlight:    cmp.Or(j.opts.InFlight, perConnection*len(src.conns)),
		Progress: func(n int64) {
			copied.Add(uint64(n))
			j.done.Add(uint64(n))
		},
	})
	j.result.Copied, j.result.Zeroed, j.result.Extents = copied.Load(), zeroed.Load(), extents
	return err
}
