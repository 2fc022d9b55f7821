package nbd

import (
	"context"
	"sync"
	"time"
)

// Limiter caps the rate of the data read from exports, in bytes per
// second, over every copy, connection and worker it is given to: one
// Limiter for a whole run is one cap for the run (--bwlimit).
//
// It is a token bucket that may run into debt: a read is sent once the
// bucket is not in debt, and takes its whole length then, whatever its
// size. Reads are charged before they are sent because up to InFlight of
// them are on the wire at once: charged on arrival, the first InFlight
// reads (16 MiB at the defaults) would pass uncapped. The part of a read
// that comes back as holes moved no data and is given back (Give), which
// lets the next read go at once: a run of holes costs round trips, not
// time at the cap. golang.org/x/time/rate cannot do that: its
// reservations fix each wait when they are made, and can be cancelled only
// whole.
type Limiter struct {
	rate  float64 // bytes per second
	burst float64 // the most the bucket holds after a pause

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	now     func() time.Time
	changed chan struct{} // closed, and replaced, when bytes are given back
}

// NewLimiter returns a limiter of bytesPerSecond (above 0). After a pause
// it lets a tenth of a second's worth through at once (at least 256 KiB,
// one read), so that a run's average stays at the cap.
func NewLimiter(bytesPerSecond int64) *Limiter {
	return newLimiter(bytesPerSecond, time.Now)
}

func newLimiter(bytesPerSecond int64, now func() time.Time) *Limiter {
	r := float64(bytesPerSecond)
	return &Limiter{rate: r, burst: max(r/10, 256<<10), now: now, last: now(), changed: make(chan struct{})}
}

// Rate is the cap, in bytes per second.
func (l *Limiter) Rate() int64 { return int64(l.rate) }

// Take waits until the bucket is out of debt, then takes n bytes from it;
// it returns early with ctx's cause when ctx ends first. A nil Limiter
// takes nothing.
func (l *Limiter) Take(ctx context.Context, n uint64) error {
	if l == nil || n == 0 {
		return nil
	}
	for {
		wait, changed := l.take(float64(n))
		if wait == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		}
	}
}

// take takes n when the bucket is not in debt; otherwise it says how long
// until the debt is paid, and what is closed if bytes are given back
// before then.
func (l *Limiter) take(n float64) (time.Duration, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill()
	if l.tokens >= 0 {
		l.tokens -= n
		return 0, nil
	}
	return max(time.Duration(-l.tokens/l.rate*float64(time.Second)), time.Microsecond), l.changed
}

// Give returns n bytes taken but not read (a read's holes).
func (l *Limiter) Give(n uint64) {
	if l == nil || n == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill()
	l.tokens = min(l.tokens+float64(n), l.burst)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *Limiter) refill() {
	now := l.now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(l.tokens+d.Seconds()*l.rate, l.burst)
	}
	l.last = now
}
