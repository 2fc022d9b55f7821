package contentsum

import (
	"crypto/sha256"
	"fmt"
	"io"
	"slices"
	"sync"
)

// Stream computes the checksum of a content that is written in pieces, in
// any order and from several goroutines at once, as a copy writes a fresh
// sparse file: what is never written reads as zeroes. Summing the bytes as
// they are written costs one pass over them, where reading the file back
// costs a second read of the whole disk.
//
// A chunk is hashed as soon as all its bytes are accounted for (written,
// or said to read as zeroes), so memory holds only the chunks being
// filled: those the writes in flight touch.
type Stream struct {
	size uint64

	mu      sync.Mutex
	open    map[uint64]*filling // chunk index -> the chunk being filled
	digests [][32]byte          // per chunk; the zero value means "not hashed yet"
	hashed  []bool
	err     error
}

// filling is a chunk part of which is accounted for.
type filling struct {
	mu    sync.Mutex
	buf   []byte  // nil while only zeroes were accounted
	spans []Range // accounted, sorted, merged; offsets within the chunk
}

// NewStream starts the checksum of a content of size bytes.
func NewStream(size uint64) *Stream {
	n := (size + ChunkSize - 1) / ChunkSize
	return &Stream{size: size, open: map[uint64]*filling{}, digests: make([][32]byte, n), hashed: make([]bool, n)}
}

// Write accounts p as the content at off.
func (s *Stream) Write(off uint64, p []byte) { s.account(off, uint64(len(p)), p) }

// Zero accounts n bytes at off as reading as zeroes.
func (s *Stream) Zero(off, n uint64) { s.account(off, n, nil) }

func (s *Stream) account(off, n uint64, p []byte) {
	if off+n > s.size || off+n < off {
		s.fail(fmt.Errorf("contentsum: %d bytes at offset %d lie past the content's %d bytes", n, off, s.size))
		return
	}
	for n > 0 {
		idx, at := off/ChunkSize, off%ChunkSize
		part := min(n, ChunkSize-at)
		var data []byte
		if p != nil {
			data, p = p[:part], p[part:]
		}
		s.fill(idx, at, part, data)
		off, n = off+part, n-part
	}
}

// fill accounts part bytes at offset at of chunk idx, and hashes the chunk
// once it is whole.
func (s *Stream) fill(idx, at, part uint64, data []byte) {
	s.mu.Lock()
	if s.hashed[idx] {
		s.mu.Unlock()
		s.fail(fmt.Errorf("contentsum: chunk %d written again after it was complete", idx))
		return
	}
	c := s.open[idx]
	if c == nil {
		c = &filling{}
		s.open[idx] = c
	}
	s.mu.Unlock()

	length := s.chunkLen(idx)
	c.mu.Lock()
	if data != nil {
		if c.buf == nil {
			c.buf = make([]byte, length)
		}
		copy(c.buf[at:], data)
	}
	c.spans = addSpan(c.spans, Range{Off: at, Len: part})
	whole := len(c.spans) == 1 && c.spans[0].Off == 0 && c.spans[0].Len == length
	c.mu.Unlock()
	if !whole {
		return
	}
	d := digestOf(c.buf, length)
	s.mu.Lock()
	delete(s.open, idx)
	s.digests[idx], s.hashed[idx] = d, true
	s.mu.Unlock()
}

func (s *Stream) chunkLen(idx uint64) uint64 { return min(ChunkSize, s.size-idx*ChunkSize) }

func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// Sum is the checksum of everything written, with zeroes wherever nothing
// was, once every write has returned. Every chunk's digest is written to
// digests, if not nil, as Options.Digests has them.
func (s *Stream) Sum(digests io.Writer) (Sum, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return Sum{}, s.err
	}
	l := newDigestList()
	l.out = digests
	for idx := range s.digests {
		i := uint64(idx)
		switch c := s.open[i]; {
		case s.hashed[i]:
			l.add(s.digests[i])
		case c != nil:
			l.add(digestOf(c.buf, s.chunkLen(i)))
		default:
			l.add(zeroDigest(s.chunkLen(i)))
		}
	}
	if l.err != nil {
		return Sum{}, fmt.Errorf("contentsum: writing the chunk digests: %w", l.err)
	}
	return l.sum(s.size), nil
}

// digestOf is the digest of a chunk of length bytes whose buffer is buf,
// or all zeroes when buf is nil.
func digestOf(buf []byte, length uint64) [32]byte {
	if buf == nil {
		return zeroDigest(length)
	}
	return sha256.Sum256(buf)
}

// addSpan adds r to sorted, merged spans, merging what touches it.
func addSpan(spans []Range, r Range) []Range {
	i, _ := slices.BinarySearchFunc(spans, r.Off, func(x Range, off uint64) int {
		switch {
		case x.Off+x.Len < off:
			return -1
		case x.Off > off:
			return 1
		}
		return 0
	})
	// spans[i:] are those that end at or after r.Off; merge those that
	// start at or before r's end.
	j := i
	lo, hi := r.Off, r.Off+r.Len
	for j < len(spans) && spans[j].Off <= hi {
		lo, hi = min(lo, spans[j].Off), max(hi, spans[j].Off+spans[j].Len)
		j++
	}
	return slices.Replace(spans, i, j, Range{Off: lo, Len: hi - lo})
}
