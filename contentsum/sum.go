// Package contentsum computes a checksum of a disk's logical content: the
// bytes a guest would read, over the whole virtual size. It is the same
// for every source of the same content (a backup chain, a restored raw or
// qcow2 image, the live NBD export), whatever their format, allocation or
// sparseness, so a backup manifest can record it and a restore can check
// against it.
//
// # Definition
//
// Backup manifests record this value: the definition below must never
// change. A different one needs a new name in the text form.
//
//  1. The content, of size bytes, is cut into chunks of 1 MiB (1048576
//     bytes), in order; the last chunk is shorter when size is not a
//     multiple of 1 MiB. A disk of size 0 has no chunks.
//  2. Each chunk's digest is the SHA-256 of its bytes.
//  3. The checksum is the SHA-256 of the chunk digests (32 bytes each)
//     concatenated in order.
//  4. Its text form is "sha256-1m:" followed by the 64 lower-case hex
//     digits of the checksum.
//
// Every all-zero 1 MiB chunk has the same digest, so ranges that an NBD
// server's base:allocation context reports as reading as zeroes are never
// read, and chunks are hashed in parallel; yet OfReader computes the value
// with nothing but sha256, as a reference. The text form does not record
// the size: the checksum determines it, since the number of digests gives
// the number of chunks and the last chunk's digest covers its length.
package contentsum

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
)

// ChunkSize is the length of the chunks the content is cut into.
const ChunkSize = 1 << 20

// kind names the definition in the text form.
const kind = "sha256-1m"

// Sum is the checksum of a disk's content.
type Sum struct {
	// Size is the content's length in bytes; 0 in a Sum from Parse, as
	// the text form does not record it.
	Size   uint64
	Digest [32]byte
}

// String writes s in its text form, "sha256-1m:<64 hex digits>".
func (s Sum) String() string {
	return kind + ":" + hex.EncodeToString(s.Digest[:])
}

// Equal reports whether s and t are the checksums of the same content. It
// compares the digests alone, which determine the size, so that a Sum
// from Parse equals the one computed from the disk.
func (s Sum) Equal(t Sum) bool { return s.Digest == t.Digest }

// Parse reads a checksum in the text form String writes, and nothing else:
// one spelling for each value, so that manifests can be compared as text.
func Parse(text string) (Sum, error) {
	bad := func(format string, args ...any) (Sum, error) {
		return Sum{}, fmt.Errorf("contentsum: %q is not a content checksum: "+format+" (want %s:<64 lower-case hex digits>)",
			append(append([]any{text}, args...), kind)...)
	}
	k, digits, ok := strings.Cut(text, ":")
	switch {
	case !ok:
		return bad("no kind")
	case k != kind:
		return bad("unknown kind %q", k)
	case len(digits) != 2*sha256.Size:
		return bad("%d digits", len(digits))
	case strings.ToLower(digits) != digits:
		return bad("upper-case digits")
	}
	var s Sum
	if _, err := hex.Decode(s.Digest[:], []byte(digits)); err != nil {
		return bad("%v", err)
	}
	return s, nil
}

// OfReader computes the checksum of the first size bytes of r by reading
// them all, in order, straight from the definition. It is the reference
// the faster Export is tested against, and what sums a file that is the
// content itself (a raw image, a device).
func OfReader(r io.ReaderAt, size uint64) (Sum, error) {
	buf := make([]byte, min(size, ChunkSize))
	l := newDigestList()
	for off := uint64(0); off < size; off += ChunkSize {
		b := buf[:min(ChunkSize, size-off)]
		n, err := r.ReadAt(b, int64(off))
		if n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			name := ""
			if f, ok := r.(interface{ Name() string }); ok {
				name = f.Name() + ": "
			}
			return Sum{}, fmt.Errorf("contentsum: %sreading %d bytes at offset %d: %w", name, len(b), off, err)
		}
		l.add(sha256.Sum256(b))
	}
	return l.sum(size), nil
}

// digestList is step 3 of the definition: it hashes chunk digests as they
// come, in order, so no list of them is kept.
type digestList struct {
	h   hash.Hash
	out io.Writer // also gets every digest, if set
	err error     // out's first error
}

func newDigestList() *digestList { return &digestList{h: sha256.New()} }

func (l *digestList) add(d [32]byte) {
	l.h.Write(d[:])
	if l.out != nil && l.err == nil {
		_, l.err = l.out.Write(d[:])
	}
}

func (l *digestList) sum(size uint64) Sum {
	return Sum{Size: size, Digest: [32]byte(l.h.Sum(nil))}
}

// zeroChunk is the digest of ChunkSize zero bytes.
var zeroChunk = sync.OnceValue(func() [32]byte { return sha256.Sum256(make([]byte, ChunkSize)) })

// zeroDigest is the digest of n zero bytes, n <= ChunkSize.
func zeroDigest(n uint64) [32]byte {
	if n == ChunkSize {
		return zeroChunk()
	}
	return sha256.Sum256(make([]byte, n))
}
