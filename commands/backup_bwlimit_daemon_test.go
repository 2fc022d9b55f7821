package commands

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testCap = 4 << 20 // --bwlimit 4M

// jsonResult is the closing "result" line of a --json copy.
type jsonResult struct {
	Type      string `json:"type"`
	State     string `json:"state"`
	Bytes     uint64 `json:"bytes"`
	ElapsedMS int64  `json:"elapsed_ms"`
}

func copyResult(t *testing.T, stdout string) jsonResult {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		var j jsonResult
		if json.Unmarshal([]byte(line), &j) == nil && j.Type == "result" {
			return j
		}
	}
	t.Fatalf("no result line in:\n%s", stdout)
	return jsonResult{}
}

// A backup of 24 MiB of data at --bwlimit 4M reads at the cap: the rate
// the copy reports is within 20% of 4 MiB/s, and the wall time is at least
// what the cap allows. It is a functional test of a cap, not a speed target.
// The restore from that backup, capped at 8M, is held to its cap the same way.
func TestBackupBWLimitDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x5a, 0, 24<<20)
	dir := filepath.Join(t.TempDir(), "b")
	start := time.Now()
	r := vb(t, open, "backup", dom, "--to", dir, "--bwlimit", "4M", "--json")
	wall := time.Since(start)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "Reading at most 4.000 MiB/s (--bwlimit), for the whole run")
	res := copyResult(t, r.stdout)
	if res.Bytes < 24<<20 {
		t.Fatalf("the backup copied %d bytes, want the 24 MiB written", res.Bytes)
	}
	rate := float64(res.Bytes) / (float64(res.ElapsedMS) / 1000)
	t.Logf("copied %d bytes in %d ms: %.2f MiB/s at a cap of 4 MiB/s; wall %v", res.Bytes, res.ElapsedMS, rate/(1<<20), wall)
	if rate < 0.8*testCap || rate > 1.2*testCap {
		t.Errorf("the copy reports %.2f MiB/s, not within 20%% of the 4 MiB/s cap", rate/(1<<20))
	}
	// The bucket's burst (a tenth of a second) and one read go at once.
	least := time.Duration(float64(res.Bytes-testCap/10-256<<10) / testCap * float64(time.Second))
	if wall < least {
		t.Errorf("the backup took %v of wall time; at 4 MiB/s its %d bytes take at least %v", wall, res.Bytes, least)
	}
	if most := time.Duration(float64(res.Bytes)/(0.8*testCap)*float64(time.Second)) + 30*time.Second; wall > most {
		t.Errorf("the backup took %v of wall time, more than %v", wall, most)
	}

	// The plain output shows the rate too.
	out := t.TempDir()
	start = time.Now()
	rr := vb(t, open, "restore", "--from", dir, "--to", out, "--bwlimit", "8M")
	wall = time.Since(start)
	wantCode(t, rr, ExitOK)
	m := regexp.MustCompile(`restore completed: ([0-9.]+) MiB in \S+ \(([0-9.]+) MiB/s\)`).FindStringSubmatch(rr.stderr)
	if m == nil {
		t.Fatalf("no rate in the restore's output:\n%s", rr.stderr)
	}
	shown, _ := strconv.ParseFloat(m[2], 64)
	copied, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("restore: %s MiB at %s MiB/s shown, wall %v", m[1], m[2], wall)
	if shown < 0.8*8 || shown > 1.2*8 {
		t.Errorf("the restore shows %.1f MiB/s, not within 20%% of the 8 MiB/s cap:\n%s", shown, rr.stderr)
	}
	if least := time.Duration((copied - 0.8 - 0.25) / 8 * float64(time.Second)); wall < least {
		t.Errorf("the restore of %.1f MiB took %v at 8 MiB/s; it takes at least %v", copied, wall, least)
	}
}

// One cap for the whole run: two domains of 12 MiB each, backed up two at
// a time under --bwlimit 4M, take about 6 s together, not the 3 s that a
// cap per domain would allow.
func TestBackupManyBWLimitDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	d1 := bed.Domain(t, "vda:qcow2:64M")
	d2 := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, d1, "vda", 0x61, 0, 12<<20)
	bed.Write(t, d2, "vda", 0x62, 0, 12<<20)
	dir := filepath.Join(t.TempDir(), "b")
	start := time.Now()
	r := vb(t, open, "backup", d1, d2, "--to", dir, "--parallel", "2", "--bwlimit", "4M", "--json")
	wall := time.Since(start)
	wantCode(t, r, ExitOK)
	var total uint64
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var j jsonDomain
		if err := json.Unmarshal([]byte(line), &j); err != nil || j.Result != "ok" {
			t.Fatalf("line %q (%v)\nstdout:\n%s\nstderr:\n%s", line, err, r.stdout, r.stderr)
		}
		if j.Bytes < 12<<20 {
			t.Errorf("%s copied %d bytes, want the 12 MiB written", j.Domain, j.Bytes)
		}
		total += j.Bytes
	}
	least := time.Duration(float64(total-testCap/10-2*256<<10) / testCap * float64(time.Second))
	t.Logf("%d bytes of 2 domains in %v (at least %v at one shared cap of 4 MiB/s)", total, wall, least)
	if wall < least {
		t.Errorf("the run took %v; at one shared cap of 4 MiB/s its %s take at least %v", wall, fmt.Sprint(total), least)
	}
}

// backup-begin --pull --fetch under --bwlimit reads at the cap too: 12 MiB
// at 4M take about 3 s, and the copy's result line says so.
func TestBackupBeginFetchBWLimitDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x63, 0, 12<<20)
	out := t.TempDir()
	start := time.Now()
	r := vb(t, open, "backup-begin", dom, "--pull", "--fetch", out+"/f", "--bwlimit", "4M", "--json")
	wall := time.Since(start)
	wantCode(t, r, ExitOK)
	res := copyResult(t, r.stdout)
	rate := float64(res.Bytes) / (float64(res.ElapsedMS) / 1000)
	t.Logf("fetched %d bytes in %d ms: %.2f MiB/s; wall %v", res.Bytes, res.ElapsedMS, rate/(1<<20), wall)
	if res.Bytes < 12<<20 || rate < 0.8*testCap || rate > 1.2*testCap {
		t.Errorf("the fetch copied %d bytes at %.2f MiB/s; want 12 MiB within 20%% of 4 MiB/s", res.Bytes, rate/(1<<20))
	}
	if least := time.Duration(float64(res.Bytes-testCap/10-256<<10) / testCap * float64(time.Second)); wall < least {
		t.Errorf("the fetch took %v; at 4 MiB/s it takes at least %v", wall, least)
	}
}
