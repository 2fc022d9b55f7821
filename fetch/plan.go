package fetch

import (
	"context"
	"fmt"

	"vbackup/nbd"
)

// piece is a range of the export to copy: data to read, or a range that
// must read as zeroes in the target (a changed block that is now zero,
// masking what the backing file holds there).
type piece struct {
	off, len uint64
	zero     bool
}

type plan []piece

func (p plan) bytes() uint64 {
	var n uint64
	for _, x := range p {
		n += x.len
	}
	return n
}

// base:allocation flags (NBD_STATE_HOLE, NBD_STATE_ZERO) and the dirty flag
// of qemu:dirty-bitmap contexts.
const (
	stateHole  = 1
	stateZero  = 2
	stateDirty = 1
)

// mapExtents lists what to copy. A full export: every extent that is not
// known to read as zeroes (a fresh target reads as zeroes already). An
// incremental: every changed extent, as data, or as zeroes where it reads as
// zeroes.
func mapExtents(ctx context.Context, c *nbd.Conn, bitmap string, size uint64) (plan, error) {
	alloc, err := walk(ctx, c, baseAllocation, 0, size)
	if err != nil {
		return nil, err
	}
	var out plan
	if bitmap == "" {
		for _, e := range alloc {
			if e.Flags&stateZero == 0 {
				out = add(out, piece{off: e.Offset, len: e.Length})
			}
		}
		return out, nil
	}
	dirty, err := walk(ctx, c, bitmap, 0, size)
	if err != nil {
		return nil, err
	}
	i := 0
	for _, d := range dirty {
		if d.Flags&stateDirty == 0 {
			continue
		}
		for ; i < len(alloc) && alloc[i].End() <= d.Offset; i++ {
		}
		for k := i; k < len(alloc) && alloc[k].Offset < d.End(); k++ {
			lo, hi := max(d.Offset, alloc[k].Offset), min(d.End(), alloc[k].End())
			out = add(out, piece{off: lo, len: hi - lo, zero: alloc[k].Flags&stateZero != 0})
		}
	}
	return out, nil
}

// walk asks for block status over [off, end) until the server has
// described all of it (a reply may cover only part of a request).
func walk(ctx context.Context, c *nbd.Conn, context string, off, end uint64) ([]nbd.Extent, error) {
	var out []nbd.Extent
	const ask = 1 << 30 // servers answer large requests in parts anyway
	for off < end {
		n := min(end-off, ask)
		exts, err := c.BlockStatus(ctx, context, off, n)
		if err != nil {
			return nil, err
		}
		if len(exts) == 0 {
			return nil, fmt.Errorf("block status of %q at offset %d: the server described nothing", context, off)
		}
		for _, e := range exts {
			if e.Offset != off || e.Length == 0 {
				return nil, fmt.Errorf("block status of %q: extents do not follow each other at offset %d", context, off)
			}
			e.Length = min(e.Length, end-off)
			out = append(out, e)
			off += e.Length
			if off >= end {
				break
			}
		}
	}
	return out, nil
}

// add appends x, merging it with the last piece when they touch and are of
// the same kind.
func add(p plan, x piece) plan {
	if x.len == 0 {
		return p
	}
	if n := len(p); n > 0 && p[n-1].zero == x.zero && p[n-1].off+p[n-1].len == x.off {
		p[n-1].len += x.len
		return p
	}
	return append(p, x)
}
