package engine

import (
	"strings"
	"testing"
	"time"

	"vbackup/chain"
)

// at makes backups taken at the given UTC times, oldest first.
func at(times ...string) []*chain.Backup {
	var out []*chain.Backup
	for i, s := range times {
		t, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			panic(err)
		}
		b := &chain.Backup{}
		b.Time, b.Seq = t, i+1
		b.Checkpoint.Name = s
		out = append(out, b)
	}
	return out
}

func kept(vs []Verdict) string {
	var names []string
	for _, v := range vs {
		if v.Keep {
			names = append(names, v.Backup.Name()+" ("+strings.Join(v.Reasons, ", ")+")")
		}
	}
	return strings.Join(names, "; ")
}

func TestPolicy(t *testing.T) {
	nightly := at("2026-11-25 01:00", "2026-11-26 01:00", "2026-11-27 01:00", "2026-11-28 01:00",
		"2026-11-29 01:00", "2026-11-30 01:00", "2026-12-01 01:00", "2026-12-01 13:00", "2026-12-02 01:00")
	cases := []struct {
		name   string
		policy Policy
		want   string
	}{
		{"last 2", Policy{Last: 2}, "2026-12-01 13:00 (last); 2026-12-02 01:00 (last)"},
		// Two backups on 1 December: the newer of them stands for the day.
		{"daily 3", Policy{Daily: 3}, "2026-11-30 01:00 (daily); 2026-12-01 13:00 (daily); 2026-12-02 01:00 (daily)"},
		// ISO weeks: 30 November 2026 is a Monday.
		{"weekly 2", Policy{Weekly: 2}, "2026-11-29 01:00 (weekly); 2026-12-02 01:00 (weekly)"},
		{"monthly 5 (only two months have one)", Policy{Monthly: 5}, "2026-11-30 01:00 (monthly); 2026-12-02 01:00 (monthly)"},
		{"union of rules", Policy{Last: 1, Weekly: 2}, "2026-11-29 01:00 (weekly); 2026-12-02 01:00 (last, weekly)"},
		{"within 1d", Policy{Within: Within{Days: 1, Text: "1d"}}, "2026-12-01 01:00 (within 1d); 2026-12-01 13:00 (within 1d); 2026-12-02 01:00 (within 1d)"},
		{"within 13h", Policy{Within: Within{Hours: 13, Text: "13h"}}, "2026-12-01 13:00 (within 13h); 2026-12-02 01:00 (within 13h)"},
		{"hourly 2", Policy{Hourly: 2}, "2026-12-01 13:00 (hourly); 2026-12-02 01:00 (hourly)"},
		{"yearly 1", Policy{Yearly: 1}, "2026-12-02 01:00 (yearly)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := kept(c.policy.Apply(nightly)); got != c.want {
				t.Errorf("kept %s\nwant %s", got, c.want)
			}
		})
	}
}

// The newest backup is kept whatever the rules say: the next incremental
// builds on it.
func TestPolicyKeepsNewest(t *testing.T) {
	bs := at("2025-01-01 00:00", "2026-12-02 01:00")
	got := kept(Policy{Yearly: 1}.Apply(bs[:1]))
	if got != "2025-01-01 00:00 (yearly)" {
		t.Errorf("kept %s", got)
	}
	// A within span that ends before the newest: it is kept all the same.
	vs := Policy{Within: Within{Hours: 1, Text: "1h"}}.Apply(bs)
	if !vs[1].Keep || vs[0].Keep {
		t.Errorf("verdicts %+v", vs)
	}
	w := Policy{Monthly: 1, Loc: time.UTC}.Apply(at("2026-12-01 00:00", "2026-12-02 00:00"))
	if w[0].Keep || !w[1].Keep {
		t.Errorf("monthly 1 keeps %s", kept(w))
	}
}

// Periods are taken in the policy's time zone: 23:30 UTC is the next day
// east of Greenwich.
func TestPolicyLocalTime(t *testing.T) {
	bs := at("2026-12-01 22:00", "2026-12-01 23:30")
	if got := kept(Policy{Daily: 2}.Apply(bs)); got != "2026-12-01 23:30 (daily)" {
		t.Errorf("UTC: kept %s", got)
	}
	east := time.FixedZone("UTC+1", 3600)
	if got := kept(Policy{Daily: 2, Loc: east}.Apply(bs)); got != "2026-12-01 22:00 (daily); 2026-12-01 23:30 (daily)" {
		t.Errorf("UTC+1: kept %s", got)
	}
}

func TestParseWithin(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Within
	}{
		{"14d", Within{Days: 14, Text: "14d"}},
		{"1y6m", Within{Years: 1, Months: 6, Text: "1y6m"}},
		{"2d12h", Within{Days: 2, Hours: 12, Text: "2d12h"}},
	} {
		got, err := ParseWithin(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseWithin(%q) = %+v, %v", c.in, got, err)
		}
	}
	for _, bad := range []string{"", "2w", "1.5d", "-3d", "d", "3d1y"} {
		if _, err := ParseWithin(bad); err == nil {
			t.Errorf("ParseWithin(%q) succeeded", bad)
		}
	}
}

func TestPolicyString(t *testing.T) {
	p := Policy{Daily: 7, Weekly: 4, Within: Within{Days: 2, Text: "2d"}}
	if got := p.String(); got != "keep 7 daily, 4 weekly, all within 2d of the newest (periods in UTC)" {
		t.Errorf("String = %q", got)
	}
	if !(Policy{}).Empty() || p.Empty() {
		t.Error("Empty")
	}
}
