package nbd

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// One limiter shared by readers at once caps their sum, not each one: 4
// readers of 2 MiB at 8 MiB/s take a second together (less the bucket's
// tenth of a second), where 4 limiters of their own would let them through
// in a quarter of that.
func TestLimiterSharedByParallelReaders(t *testing.T) {
	const (
		rate    = 8 << 20
		readers = 4
		each    = 2 << 20
		piece   = 256 << 10
	)
	l := NewLimiter(rate)
	var took [readers]atomic.Uint64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range readers {
		wg.Go(func() {
			for n := uint64(0); n < each; n += piece {
				if err := l.Take(context.Background(), piece); err != nil {
					t.Error(err)
					return
				}
				took[i].Add(piece)
			}
		})
	}
	// Halfway through the expected time, the readers together are near
	// the cap's share of it, not ahead.
	time.Sleep(500 * time.Millisecond)
	var mid uint64
	for i := range took {
		mid += took[i].Load()
	}
	midAt := time.Since(start) // a loaded machine may have slept longer
	wg.Wait()
	elapsed := time.Since(start)
	total := float64(readers * each)
	// The bucket lets its burst (rate/10) and the read that empties it go
	// at once; the rest waits for the cap.
	least := time.Duration((total - rate/10 - piece) / rate * float64(time.Second))
	if elapsed < least {
		t.Errorf("%d readers read %.0f MiB in %v at a shared cap of 8 MiB/s; it takes at least %v", readers, total/(1<<20), elapsed, least)
	}
	if elapsed > 3*time.Second {
		t.Errorf("%d readers took %v for %.0f MiB at 8 MiB/s (about 1 s expected)", readers, elapsed, total/(1<<20))
	}
	if max := uint64(midAt.Seconds()*rate + rate/10 + readers*piece); mid > max {
		t.Errorf("after %v the readers had taken %d bytes together, more than the cap allows (%d)", midAt, mid, max)
	}
}

// The bucket in debt holds every reader back; bytes given back (holes)
// let the next read go at once; a pause fills it only to its burst.
func TestLimiterDebtAndGive(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLimiter(1<<20, func() time.Time { return now })
	if w, _ := l.take(1 << 20); w != 0 {
		t.Fatalf("the first take waited %v: a bucket not in debt lends", w)
	}
	if w, _ := l.take(64 << 10); w != time.Second {
		t.Fatalf("a take with 1 MiB owed at 1 MiB/s waits %v, want 1s", w)
	}
	now = now.Add(500 * time.Millisecond)
	if w, _ := l.take(64 << 10); w != 500*time.Millisecond {
		t.Fatalf("half a second later the wait is %v, want 500ms", w)
	}
	l.Give(1 << 20) // the first read was all holes
	if w, _ := l.take(64 << 10); w != 0 {
		t.Fatalf("after the debt was given back a take waited %v", w)
	}
	now = now.Add(time.Hour)
	l.take(0)
	if l.tokens > l.burst {
		t.Fatalf("after an hour the bucket holds %.0f bytes, more than its burst %.0f", l.tokens, l.burst)
	}
}

func TestLimiterTakeEndsWithContext(t *testing.T) {
	l := NewLimiter(1024) // a take of 1 MiB leaves 17 minutes of debt
	l.Take(context.Background(), 1<<20)
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stopped")
	time.AfterFunc(50*time.Millisecond, func() { cancel(stop) })
	start := time.Now()
	if err := l.Take(ctx, 1); !errors.Is(err, stop) {
		t.Fatalf("Take = %v, want the context's cause", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Take returned %v after its context ended", d)
	}
}

// A copy under a cap is charged for the data it moves, not for the holes
// of its reads: the 64 MiB export holding 4.06 MiB of data, read without
// base:allocation so that every read covers holes, takes about a second at
// 4 MiB/s, not sixteen.
func TestCopyLimitChargesDataNotHoles(t *testing.T) {
	img, want := sparseImage(t)
	s := qemuNBD(t, img, "-r", "-f", "qcow2")
	c := dial(t, s.uri(), Options{}) // no base:allocation: the reads meet the holes
	dst := &memDst{b: make([]byte, len(want))}
	const rate = 4 << 20
	start := time.Now()
	n, err := Copy(testCtx(t), c, dst, CopyOptions{Limit: NewLimiter(rate)})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	data := float64(1<<20 + 64<<10 + 3<<20)
	if float64(n) != data {
		t.Fatalf("the copy wrote %d bytes, want the %.0f of data", n, data)
	}
	least := time.Duration((data - rate/10 - 256<<10) / rate * float64(time.Second))
	if elapsed < least {
		t.Errorf("%.2f MiB of data copied in %v under 4 MiB/s; it takes at least %v", data/(1<<20), elapsed, least)
	}
	if elapsed > 5*time.Second {
		t.Errorf("the copy took %v: the holes were charged as data (64 MiB at 4 MiB/s is 16 s; the data alone about 1 s)", elapsed)
	}
}
