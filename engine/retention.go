package engine

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"vbackup/chain"
)

// Policy is which backups prune keeps, with the semantics of restic's
// forget: each --keep-PERIOD N keeps the newest backup of each of the N
// most recent periods that have one; --keep-last N the newest N;
// --keep-within D every backup up to D older than the newest. A backup is
// kept when any rule keeps it. Periods are taken in Loc (UTC unless the
// user chose local time); weeks are ISO weeks.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       Within
	Loc                                          *time.Location
}

// Within is a --keep-within span, in restic's form: years, months, days
// and hours, as 1y2m3d4h (any part may be left out).
type Within struct {
	Years, Months, Days, Hours int
	Text                       string // as the user wrote it
}

var withinForm = regexp.MustCompile(`^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$`)

// ParseWithin reads a --keep-within span.
func ParseWithin(s string) (Within, error) {
	m := withinForm.FindStringSubmatch(s)
	if s == "" || m == nil {
		return Within{}, fmt.Errorf("%q is not a span: write years (y), months (m), days (d) and hours (h) as in 1y6m, 14d or 36h", s)
	}
	w := Within{Text: s}
	for i, p := range []*int{&w.Years, &w.Months, &w.Days, &w.Hours} {
		if m[i+1] != "" {
			n, err := strconv.Atoi(m[i+1])
			if err != nil {
				return Within{}, fmt.Errorf("%q: %w", s, err)
			}
			*p = n
		}
	}
	return w, nil
}

func (w Within) set() bool { return w.Years+w.Months+w.Days+w.Hours > 0 }

// Zero reports a span of no time (0d): it would keep nothing.
func (w Within) Zero() bool { return !w.set() }

// Empty reports a policy with no rule: prune refuses it, since it would
// keep only the newest backup.
func (p Policy) Empty() bool {
	return p.Last+p.Hourly+p.Daily+p.Weekly+p.Monthly+p.Yearly == 0 && !p.Within.set()
}

// String says the policy as a user reads it.
func (p Policy) String() string {
	var parts []string
	for _, r := range p.rules() {
		switch {
		case r.n > 0 && r.name == "last":
			parts = append(parts, fmt.Sprintf("the %d newest", r.n))
		case r.n > 0:
			parts = append(parts, fmt.Sprintf("%d %s", r.n, r.name))
		}
	}
	if p.Within.set() {
		parts = append(parts, "all within "+p.Within.Text+" of the newest")
	}
	loc := "UTC"
	if p.Loc != nil && p.Loc != time.UTC {
		loc = "local time, " + p.Loc.String()
	}
	return "keep " + strings.Join(parts, ", ") + " (periods in " + loc + ")"
}

// Verdict is what the policy says of one backup.
type Verdict struct {
	Backup  *chain.Backup
	Level   string // the backup's level when it was judged (a merge may change it)
	Keep    bool
	Reasons []string // why it is kept
}

type rule struct {
	name   string // "daily", as the reasons say it
	n      int
	bucket func(t time.Time, i int) string
}

func (p Policy) rules() []rule {
	return []rule{
		{"last", p.Last, func(_ time.Time, i int) string { return strconv.Itoa(i) }},
		{"hourly", p.Hourly, func(t time.Time, _ int) string { return t.Format("2006-01-02 15") }},
		{"daily", p.Daily, func(t time.Time, _ int) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time, _ int) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time, _ int) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time, _ int) string { return t.Format("2006") }},
	}
}

// Apply judges backups (oldest first, as a store lists them) and returns
// the verdicts in the same order. The newest is always kept: the next
// incremental builds on it.
func (p Policy) Apply(backups []*chain.Backup) []Verdict {
	loc := p.Loc
	if loc == nil {
		loc = time.UTC
	}
	out := make([]Verdict, len(backups))
	if len(backups) == 0 {
		return out
	}
	rules := p.rules()
	last := make([]string, len(rules))
	left := make([]int, len(rules))
	for i, r := range rules {
		left[i] = r.n
	}
	newest := backups[len(backups)-1].Time
	var edge time.Time
	if p.Within.set() {
		edge = newest.AddDate(-p.Within.Years, -p.Within.Months, -p.Within.Days).Add(-time.Duration(p.Within.Hours) * time.Hour)
	}
	// Newest first, as restic walks its snapshots.
	for n, i := 0, len(backups)-1; i >= 0; n, i = n+1, i-1 {
		b := backups[i]
		v := Verdict{Backup: b, Level: b.Level}
		t := b.Time.In(loc)
		for k, r := range rules {
			if left[k] == 0 {
				continue
			}
			if key := r.bucket(t, n); key != last[k] {
				last[k] = key
				left[k]--
				v.Keep, v.Reasons = true, append(v.Reasons, r.name)
			}
		}
		if p.Within.set() && !b.Time.Before(edge) {
			v.Keep, v.Reasons = true, append(v.Reasons, "within "+p.Within.Text)
		}
		if n == 0 && !v.Keep {
			v.Keep, v.Reasons = true, []string{"newest: the next incremental builds on it"}
		}
		out[i] = v
	}
	return out
}
