package contentsum

import (
	"crypto/sha256"
	"fmt"
	"io"
	"sort"
)

// Range is a byte range of a disk's content.
type Range struct{ Off, Len uint64 }

// Earlier is an earlier state of a disk, for a checksum that reads only
// what changed since: an incremental backup's chain differs from the one
// before only where the new overlay holds data.
type Earlier struct {
	Digests io.ReaderAt // its chunk digests, as Options.Digests wrote them
	Size    uint64      // its content's size
	Changed []Range     // what changed since, sorted by offset
}

// known returns, for a content of size bytes, the digest of each chunk no
// changed range touches; nil when e cannot serve (none, or another size).
func (e *Earlier) known(size uint64) func(off uint64) ([32]byte, bool, error) {
	if e == nil || e.Size != size {
		return nil
	}
	return func(off uint64) ([32]byte, bool, error) {
		var d [32]byte
		end := min(off+ChunkSize, size)
		// The first range that ends after off is the only one that can
		// start before end.
		i := sort.Search(len(e.Changed), func(i int) bool { return e.Changed[i].Off+e.Changed[i].Len > off })
		if i < len(e.Changed) && e.Changed[i].Off < end {
			return d, false, nil
		}
		if _, err := e.Digests.ReadAt(d[:], int64(off/ChunkSize*32)); err != nil {
			return d, false, fmt.Errorf("the earlier chunk digests, at chunk %d: %w", off/ChunkSize, err)
		}
		return d, true, nil
	}
}

// OfDigests is the checksum of a content of size bytes whose chunk digests
// r holds (as Options.Digests wrote them): to make sure a digest file is
// the one a recorded checksum came from before reusing it.
func OfDigests(r io.Reader, size uint64) (Sum, error) {
	n := (size + ChunkSize - 1) / ChunkSize
	h := sha256.New()
	if got, err := io.CopyN(h, r, int64(n*32)); err != nil {
		return Sum{}, fmt.Errorf("contentsum: %d chunk digests for %d bytes, found %d bytes of them: %w", n, size, got, err)
	}
	var extra [1]byte
	if k, _ := r.Read(extra[:]); k > 0 {
		return Sum{}, fmt.Errorf("contentsum: more than the %d chunk digests of %d bytes", n, size)
	}
	return Sum{Size: size, Digest: [32]byte(h.Sum(nil))}, nil
}
