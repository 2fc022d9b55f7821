package fetch

import (
	"context"
	"iter"

	"vbackup/nbd"
)

// piece is a range of the export to copy: data to read, or a range that
// must read as zeroes in the target (a changed block that is now zero,
// masking what the backing file holds there).
type piece struct {
	off, len uint64
	zero     bool
}

func (x piece) end() uint64 { return x.off + x.len }

// plan is what to copy of a disk, pieces in increasing order, worked out
// as it is consumed (block status a window at a time), so that no list of
// the disk's extents is ever held: memory does not grow with the disk.
type plan = iter.Seq2[piece, error]

// base:allocation's NBD_STATE_ZERO.
const stateZero = nbd.StateZero

// wanted is what to copy. A full export: every extent that is not known to
// read as zeroes (a fresh target reads as zeroes already). An incremental:
// every changed extent, as data, or as zeroes where it reads as zeroes.
func wanted(ctx context.Context, c *nbd.Conn, bitmap string) plan {
	return fromExtents(c.Extents(ctx, bitmap), bitmap != "")
}

// fromExtents is wanted from the export's extents (base:allocation's, cut
// to the changed ones for an incremental).
func fromExtents(exts iter.Seq2[nbd.Extent, error], incremental bool) plan {
	return merged(func(yield func(piece, error) bool) {
		for e, err := range exts {
			if err != nil {
				yield(piece{}, err)
				return
			}
			zero := e.Flags&stateZero != 0
			if zero && !incremental {
				continue
			}
			if !yield(piece{off: e.Offset, len: e.Length, zero: zero}, nil) {
				return
			}
		}
	})
}

// mergeCap bounds a merged piece, so that the copy of a disk that is one
// long extent starts before the whole disk has been walked.
const mergeCap = 1 << 30

// merged joins pieces of the same kind that touch, up to the first end
// aligned to a qcow2 cluster past mergeCap (the export's block status
// windows end there; the cut leaves whole clusters on both sides).
func merged(in plan) plan {
	return func(yield func(piece, error) bool) {
		var cur piece
		for x, err := range in {
			if err != nil {
				yield(piece{}, err)
				return
			}
			if x.len == 0 {
				continue
			}
			touches := cur.len > 0 && cur.zero == x.zero && cur.end() == x.off
			if touches && (cur.len < mergeCap || cur.end()%clusterSize != 0) {
				cur.len += x.len
				continue
			}
			if cur.len > 0 && !yield(cur, nil) {
				return
			}
			cur = x
		}
		if cur.len > 0 {
			yield(cur, nil)
		}
	}
}
