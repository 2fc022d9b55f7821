package progress

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// formatBytes writes n in IEC units: "512 B", "1.5 KiB", "1.0 GiB".
func formatBytes(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	// Promote when rounding would print 1024.0 of a unit.
	for v >= 1023.95 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// formatRate writes a rate in bytes per second, "-" when unknown.
func formatRate(r float64, ok bool) string {
	if !ok || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
		return "-"
	}
	return formatBytes(uint64(math.Round(r))) + "/s"
}

// formatDuration writes d rounded to the second: "9s", "4m05s", "2h03m".
func formatDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", max(s, 0))
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
}

func formatETA(d time.Duration, ok bool) string {
	if !ok {
		return "-"
	}
	return formatDuration(d)
}

// percent is done/total in whole percent, 100 only when done.
func percent(done, total uint64) int {
	if total == 0 {
		return 0
	}
	if done >= total {
		return 100
	}
	return min(int(float64(done)/float64(total)*100), 99)
}

// summary is the line that closes every text output.
func summary(r Result) string {
	what := r.What
	if what == "" {
		what = "backup"
	}
	switch r.State {
	case JobCompleted:
		if r.Bytes == 0 { // a pull job: the client did the copying
			return what + " completed in " + formatDuration(r.Elapsed)
		}
		s := fmt.Sprintf("%s completed: %s in %s", what, formatBytes(r.Bytes), formatDuration(r.Elapsed))
		if r.Elapsed > 0 {
			s += fmt.Sprintf(" (%s)", formatRate(float64(r.Bytes)/r.Elapsed.Seconds(), true))
		}
		return s
	case JobUnknown:
		return withReason(what+" outcome unknown", r.Error)
	}
	return withReason(what+" "+r.State, r.Error)
}

func withReason(s, why string) string {
	if why == "" {
		return s
	}
	return s + ": " + why
}

// truncate cuts s to width columns, counting a rune as a column (disk
// names, numbers and the bar are all narrow).
func truncate(s string, width int) string {
	if len(s) <= width {
		return s
	}
	n := 0
	for i := range s {
		if n == width {
			return s[:i]
		}
		n++
	}
	return s
}

func padRight(s string, width int) string {
	if n := len([]rune(s)); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}
