package progress

import "time"

// rateSpan is how long rates are averaged over: long enough to smooth the
// steps of a 4-a-second sampler, short enough to follow a change of pace.
const rateSpan = 5 * time.Second

// rateWindow smooths a byte count's rate over the last rateSpan of
// samples.
type rateWindow struct {
	pts []point
}

type point struct {
	at time.Time
	n  uint64
}

func (w *rateWindow) add(at time.Time, n uint64) {
	if k := len(w.pts); k > 0 {
		last := w.pts[k-1]
		switch {
		case n < last.n || at.Before(last.at):
			// A count going back, or time going back, is a new series.
			w.pts = w.pts[:0]
		case at.Equal(last.at):
			w.pts[k-1].n = n
			return
		}
	}
	w.pts = append(w.pts, point{at, n})
	// Keep the newest point at least a window old as the anchor.
	for len(w.pts) > 2 && !w.pts[1].at.After(at.Add(-rateSpan)) {
		w.pts = w.pts[1:]
	}
}

// has reports whether the newest point was taken at at.
func (w *rateWindow) has(at time.Time) bool {
	return len(w.pts) > 0 && w.pts[len(w.pts)-1].at.Equal(at)
}

// rate is in bytes per second; ok is false until two samples apart in
// time are known.
func (w *rateWindow) rate() (r float64, ok bool) {
	if len(w.pts) < 2 {
		return 0, false
	}
	first, last := w.pts[0], w.pts[len(w.pts)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0, false
	}
	return float64(last.n-first.n) / dt, true
}

// eta is the time left to reach total at the current rate; ok is false
// when unknown (no rate yet, or stalled).
func (w *rateWindow) eta(done, total uint64) (time.Duration, bool) {
	if done >= total {
		return 0, total > 0
	}
	r, ok := w.rate()
	if !ok || r <= 0 {
		return 0, false
	}
	secs := float64(total-done) / r
	if secs > float64(100*24*time.Hour/time.Second) {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}
