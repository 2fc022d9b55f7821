package nbd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Extent is a range of the export and its status flags in one metadata
// context (StateHole, StateZero for base:allocation; StateDirty for
// qemu:dirty-bitmap:NAME), or a hole of a sparse read.
type Extent struct {
	Offset, Length uint64
	Flags          uint32
}

// End is the offset just past e.
func (e Extent) End() uint64 { return e.Offset + e.Length }

var (
	// ErrRange is returned, without asking the server, for a request that
	// reaches past the end of the export.
	ErrRange = errors.New("nbd: request beyond the end of the export")
	// ErrAlignment is returned for a write, write zeroes or trim whose
	// offset or length is not a multiple of the server's minimum block
	// size (reads and block status are widened and cut back instead).
	ErrAlignment = errors.New("nbd: request not aligned to the minimum block size")
)

// Requests for trim and block status carry no payload; a step of 2 GiB
// keeps their length in 32 bits and aligned to any minimum block size.
const bigStep = 1 << 31

func (c *Conn) opErr(op string, off, length uint64, err error) error {
	return &Error{Export: c.export.Name, Op: op, Offset: off, Length: length, Err: err}
}

// check validates a request against the export's size and, when strict,
// its minimum block size.
func (c *Conn) check(op string, off, length uint64, strict bool) error {
	if end := off + length; end < off || end > c.export.Size {
		return c.opErr(op, off, length, fmt.Errorf("%w (%d bytes)", ErrRange, c.export.Size))
	}
	if a := uint64(c.export.BlockSize.Min); strict && (off%a != 0 || length%a != 0) {
		return c.opErr(op, off, length, fmt.Errorf("%w (%d)", ErrAlignment, a))
	}
	return nil
}

// ReadAt reads len(p) bytes at off into p. It returns nil only when every
// byte came from the server: a server error, a protocol violation or a
// lost connection is an *Error naming the export and the range. Reads
// larger than MaxRequest are split into requests that are all in flight
// at once; reads not aligned to the minimum block size are widened.
func (c *Conn) ReadAt(ctx context.Context, p []byte, off uint64) error {
	return c.read(ctx, p, off, nil)
}

// ReadAtSparse is ReadAt that also returns the ranges the server sent as
// holes (offset-hole chunks; p reads as zeroes there), sorted and merged,
// so that a caller can leave them unwritten in a sparse target. Without
// structured replies it finds none.
func (c *Conn) ReadAtSparse(ctx context.Context, p []byte, off uint64) ([]Extent, error) {
	holes := []Extent{}
	err := c.read(ctx, p, off, &holes)
	if err != nil {
		return nil, err
	}
	return mergeExtents(holes), nil
}

func (c *Conn) read(ctx context.Context, p []byte, off uint64, holes *[]Extent) error {
	n := uint64(len(p))
	if err := c.check("read", off, n, false); err != nil || n == 0 {
		return err
	}
	a := uint64(c.export.BlockSize.Min)
	if off%a == 0 && n%a == 0 {
		return c.do(ctx, "read", cmdRead, 0, off, n, uint64(c.maxPayload), p, holes)
	}
	start, end := off/a*a, min((off+n+a-1)/a*a, c.export.Size)
	buf := make([]byte, end-start)
	if err := c.read(ctx, buf, start, holes); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	if holes != nil {
		*holes = clipExtents(*holes, off, off+n)
	}
	return nil
}

// WriteAt writes p at off. off and len(p) must be multiples of the
// minimum block size.
func (c *Conn) WriteAt(ctx context.Context, p []byte, off uint64) error {
	if err := c.checkWrite("write", off, uint64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	return c.do(ctx, "write", cmdWrite, 0, off, uint64(len(p)), uint64(c.maxPayload), p, nil)
}

// WriteZeroes makes length bytes at off read as zeroes, letting the server
// punch a hole unless noHole. A server without NBD_CMD_WRITE_ZEROES is
// sent writes of zeroes instead.
func (c *Conn) WriteZeroes(ctx context.Context, off, length uint64, noHole bool) error {
	if err := c.checkWrite("write zeroes", off, length); err != nil || length == 0 {
		return err
	}
	if !c.export.Flags.CanWriteZeroes() {
		step := min(uint64(c.maxPayload), 1<<20, length)
		return c.do(ctx, "write zeroes", cmdWrite, 0, off, length, step, make([]byte, step), nil)
	}
	var flags uint16
	if noHole {
		flags = cmdFlagNoHole
	}
	step := uint64(bigStep)
	if bs := c.export.BlockSize; bs.Advertised && bs.Max != 0xffffffff {
		step = uint64(bs.Max)
	}
	return c.do(ctx, "write zeroes", cmdWriteZeroes, flags, off, length, step, nil, nil)
}

// Trim tells the server that length bytes at off are no longer needed. It
// is a hint: on a server that does not take it, Trim does nothing.
func (c *Conn) Trim(ctx context.Context, off, length uint64) error {
	if err := c.checkWrite("trim", off, length); err != nil || length == 0 || !c.export.Flags.CanTrim() {
		return err
	}
	return c.do(ctx, "trim", cmdTrim, 0, off, length, bigStep, nil, nil)
}

// Flush asks the server to make the writes it has answered durable. On a
// server that does not advertise flush it does nothing.
func (c *Conn) Flush(ctx context.Context) error {
	if !c.export.Flags.CanFlush() {
		return nil
	}
	req := &request{cmd: cmdFlush}
	err := c.submit(ctx, req, nil)
	if err == nil {
		err = c.wait(ctx, req)
	}
	if err != nil {
		return c.opErr("flush", 0, 0, err)
	}
	return nil
}

func (c *Conn) checkWrite(op string, off, length uint64) error {
	if c.export.Flags.ReadOnly() {
		return c.opErr(op, off, length, ErrReadOnly)
	}
	return c.check(op, off, length, true)
}

// do sends one request for each piece of at most step bytes of [off,
// off+length), all before waiting for any, and waits for them all. data
// is where a read's bytes go or what a write sends (for a write, when it
// is shorter than length, each request sends its first bytes: zeroes).
// When do returns no request writes to data any more.
func (c *Conn) do(ctx context.Context, op string, cmd, flags uint16, off, length, step uint64, data []byte, holes *[]Extent) error {
	reqs := make([]*request, 0, (length+step-1)/step)
	var first error
	for pos := uint64(0); pos < length; pos += step {
		l := min(step, length-pos)
		req := &request{cmd: cmd, flags: flags, off: off + pos, length: uint32(l), wantHoles: holes != nil}
		var payload []byte
		switch {
		case cmd == cmdRead:
			req.buf = data[pos : pos+l]
		case cmd == cmdWrite && uint64(len(data)) < length:
			payload = data[:l]
		case cmd == cmdWrite:
			payload = data[pos : pos+l]
		}
		if err := c.submit(ctx, req, payload); err != nil {
			first = c.opErr(op, req.off, l, err)
			break
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if first != nil {
			req.abandon()
			continue
		}
		if err := c.wait(ctx, req); err != nil {
			first = c.opErr(op, req.off, uint64(req.length), err)
		} else if holes != nil {
			*holes = append(*holes, req.holes...)
		}
	}
	return first
}

// BlockStatus returns the extents of [off, off+length) in one of the
// negotiated metadata contexts, covering the range exactly (the server's
// answers are asked for again where they fall short, cut where they go
// beyond) with neighbours of equal flags merged.
func (c *Conn) BlockStatus(ctx context.Context, context string, off, length uint64) ([]Extent, error) {
	if err := c.check("block status", off, length, false); err != nil || length == 0 {
		return nil, err
	}
	id, err := c.contextID(context)
	if err != nil {
		return nil, c.opErr("block status", off, length, err)
	}
	a := uint64(c.export.BlockSize.Min)
	start, end := off/a*a, min((off+length+a-1)/a*a, c.export.Size)
	var all []Extent
	for cur := start; cur < end; {
		req := &request{cmd: cmdBlockStatus, off: cur, length: uint32(min(end-cur, bigStep))}
		err := c.submit(ctx, req, nil)
		if err == nil {
			err = c.wait(ctx, req)
		}
		if err != nil {
			return nil, c.opErr("block status", req.off, uint64(req.length), err)
		}
		exts := clipExtents(req.extents[id], cur, end)
		all = append(all, exts...)
		cur = exts[len(exts)-1].End()
	}
	return mergeExtents(clipExtents(all, off, off+length)), nil
}

func (c *Conn) contextID(name string) (uint32, error) {
	if !c.structured {
		return 0, fmt.Errorf("%w: block status needs structured replies, which the server refused", ErrUnsupported)
	}
	for _, mc := range c.contexts {
		if mc.name == name {
			return mc.id, nil
		}
	}
	have := "none"
	if len(c.contexts) > 0 {
		have = strings.Join(c.MetaContexts(), ", ")
	}
	return 0, fmt.Errorf("%w: metadata context %q was not negotiated (negotiated: %s); ask for it in Options.MetaContexts",
		ErrUnsupported, name, have)
}

// clipExtents cuts exts, which are sorted, to [start, end).
func clipExtents(exts []Extent, start, end uint64) []Extent {
	out := exts[:0:0]
	for _, e := range exts {
		s, t := max(e.Offset, start), min(e.End(), end)
		if s < t {
			out = append(out, Extent{Offset: s, Length: t - s, Flags: e.Flags})
		}
	}
	return out
}

// mergeExtents sorts exts and joins neighbours with the same flags.
func mergeExtents(exts []Extent) []Extent {
	slices.SortFunc(exts, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	out := exts[:0]
	for _, e := range exts {
		if n := len(out); n > 0 && out[n-1].End() == e.Offset && out[n-1].Flags == e.Flags {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}
