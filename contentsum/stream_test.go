package contentsum

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// A content written in pieces, in a shuffled order from several
// goroutines, with zero ranges said and others never written, sums as the
// whole content read in order does, and keeps the same chunk digests.
func TestStreamSumsWhatWasWritten(t *testing.T) {
	for _, size := range []uint64{0, 1, ChunkSize, 5*ChunkSize + 12345, 9 * ChunkSize} {
		rng := rand.New(rand.NewPCG(size, 7))
		content := make([]byte, size)
		type piece struct {
			off, n uint64
			zero   bool
		}
		var pieces []piece
		for off := uint64(0); off < size; {
			n := min(size-off, 1+rng.Uint64N(300<<10))
			switch rng.IntN(3) {
			case 0: // data
				for i := off; i < off+n; i++ {
					content[i] = byte(rng.Uint32())
				}
				pieces = append(pieces, piece{off, n, false})
			case 1: // said to read as zeroes
				pieces = append(pieces, piece{off, n, true})
			} // 2: never written, reads as zeroes too
			off += n
		}
		rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })

		s := NewStream(size)
		var wg sync.WaitGroup
		work := make(chan piece)
		for range 4 {
			wg.Go(func() {
				for p := range work {
					if p.zero {
						s.Zero(p.off, p.n)
					} else {
						s.Write(p.off, content[p.off:p.off+p.n])
					}
				}
			})
		}
		for _, p := range pieces {
			work <- p
		}
		close(work)
		wg.Wait()

		var digests bytes.Buffer
		got, err := s.Sum(&digests)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		want, err := OfReader(bytes.NewReader(content), size)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(want) || got.Size != size {
			t.Errorf("size %d: stream sum %v (%d bytes), want %v", size, got, got.Size, want)
		}
		fromDigests, err := OfDigests(bytes.NewReader(digests.Bytes()), size)
		if err != nil || !fromDigests.Equal(want) {
			t.Errorf("size %d: the digests written give %v (%v), want %v", size, fromDigests, err, want)
		}
	}
}

// A chunk is hashed, and its buffer dropped, as soon as it is whole: a
// copy does not hold the disk in memory.
func TestStreamDropsWholeChunks(t *testing.T) {
	s := NewStream(4 * ChunkSize)
	half := bytes.Repeat([]byte{7}, ChunkSize/2)
	s.Write(ChunkSize/2, half)
	s.Zero(2*ChunkSize, ChunkSize)
	if n := len(s.open); n != 1 {
		t.Fatalf("%d chunks held after half a chunk of data and a zero chunk, want 1", n)
	}
	s.Write(0, half)
	if n := len(s.open); n != 0 {
		t.Fatalf("%d chunks held once the chunk is whole, want 0", n)
	}
}

func TestStreamRefusesWritesPastTheEndAndTwice(t *testing.T) {
	s := NewStream(ChunkSize)
	s.Write(ChunkSize-1, []byte{1, 2})
	if _, err := s.Sum(nil); err == nil || !strings.Contains(err.Error(), "past the content") {
		t.Errorf("a write past the end: %v, want an error saying so", err)
	}
	s = NewStream(ChunkSize)
	s.Zero(0, ChunkSize)
	s.Write(0, []byte{1})
	if _, err := s.Sum(nil); err == nil || !strings.Contains(err.Error(), "written again") {
		t.Errorf("a write into a complete chunk: %v, want an error saying so", err)
	}
}

func TestAddSpanMerges(t *testing.T) {
	var spans []Range
	for _, r := range []Range{{10, 5}, {30, 5}, {0, 3}, {15, 15}, {3, 7}} {
		spans = addSpan(spans, r)
	}
	if len(spans) != 1 || spans[0] != (Range{0, 35}) {
		t.Errorf("spans %v, want [{0 35}]", spans)
	}
	spans = addSpan([]Range{{0, 5}, {20, 5}}, Range{8, 2})
	if len(spans) != 3 || spans[1] != (Range{8, 2}) {
		t.Errorf("spans %v, want the new span between the others", spans)
	}
}

// Pieces that come out of order wait in a chunk buffer, which may be one
// a chunk left dirty: the zeroes said before the first early data piece,
// and after, must still read as zeroes.
func TestStreamEarlyPiecesInAReusedBuffer(t *testing.T) {
	dirty := bytes.Repeat([]byte{0xff}, ChunkSize)
	chunkBufs.Put(&dirty)
	content := make([]byte, ChunkSize)
	for i := 600 << 10; i < 700<<10; i++ {
		content[i] = byte(i)
	}
	copy(content[100:200], bytes.Repeat([]byte{9}, 100))
	s := NewStream(ChunkSize)
	s.Zero(500<<10, 100<<10)                   // early, zeroes, no buffer yet
	s.Write(600<<10, content[600<<10:700<<10]) // early data: a buffer
	s.Zero(800<<10, 100<<10)                   // early zeroes, into the buffer
	s.Write(100, content[100:200])             // early data
	s.Zero(0, 100)                             // in order: the held piece follows
	s.Zero(200, 500<<10-200)                   // fills the gap up to the held spans
	if n := len(s.open); n != 1 {
		t.Fatalf("%d chunks open before the chunk is whole, want 1", n)
	}
	s.Zero(700<<10, 100<<10)
	s.Zero(900<<10, ChunkSize-900<<10)
	if n := len(s.open); n != 0 {
		t.Fatalf("%d chunks open once the chunk is whole, want 0", n)
	}
	got, err := s.Sum(nil)
	want, _ := OfReader(bytes.NewReader(content), ChunkSize)
	if err != nil || !got.Equal(want) {
		t.Errorf("sum %v (%v), want %v", got, err, want)
	}
}

// Pieces that come in order are hashed from the caller's buffer: the
// chunk takes no buffer of its own.
func TestStreamHashesInOrderPiecesWithoutACopy(t *testing.T) {
	content := bytes.Repeat([]byte{1, 2, 3}, ChunkSize/3+1000)[:ChunkSize+1000]
	s := NewStream(uint64(len(content)))
	for off := 0; off < len(content); off += 256 << 10 {
		end := min(off+256<<10, len(content))
		s.Write(uint64(off), content[off:end])
		for _, c := range s.open {
			if c.buf != nil {
				t.Fatalf("after the piece at %d: a chunk holds a buffer", off)
			}
		}
	}
	got, err := s.Sum(nil)
	want, _ := OfReader(bytes.NewReader(content), uint64(len(content)))
	if err != nil || !got.Equal(want) {
		t.Errorf("sum %v (%v), want %v", got, err, want)
	}
}

// A range accounted twice before its chunk is whole cannot be hashed in
// order: it is an error, not a guess at which bytes the file holds.
func TestStreamRefusesOverlaps(t *testing.T) {
	for _, second := range []struct{ off, n uint64 }{{50, 10}, {150, 100}, {0, 10}} {
		s := NewStream(ChunkSize)
		s.Write(0, make([]byte, 100))   // hashed
		s.Write(200, make([]byte, 100)) // held
		s.Write(second.off, make([]byte, second.n))
		if _, err := s.Sum(nil); err == nil || !strings.Contains(err.Error(), "accounted twice") {
			t.Errorf("%d bytes at %d again: %v, want an error saying so", second.n, second.off, err)
		}
	}
}
