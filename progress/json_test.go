package progress

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// jsonFields is the schema documented on NewJSON: each type's exact keys.
var jsonFields = map[string][]string{
	"progress":   {"type", "time", "disk", "done", "total", "rate"},
	"disk-state": {"type", "time", "disk", "state", "done", "total"},
	"job":        {"type", "time", "mode", "done", "total", "rate", "temp_used", "temp_total"},
	"result":     {"type", "time", "state", "error", "bytes", "elapsed_ms"},
}

var stringFields = []string{"type", "time", "disk", "state", "mode", "error"}

func TestJSON(t *testing.T) {
	for _, sc := range scripts() {
		t.Run(sc.name, func(t *testing.T) {
			var b strings.Builder
			p := NewJSON(&b)
			for _, s := range sc.samples {
				p.Update(s)
			}
			p.Finish(sc.result)
			p.Update(sc.samples[0])
			p.Finish(sc.result)
			golden(t, sc.name+".jsonl", b.String())
			checkJSON(t, b.String(), sc)
		})
	}
}

func checkJSON(t *testing.T, out string, sc script) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	lastProgress := map[string]map[string]any{}
	lastState := map[string]string{}
	for i, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		typ, _ := obj["type"].(string)
		want, ok := jsonFields[typ]
		if !ok {
			t.Fatalf("line %d: unknown type %q", i+1, typ)
		}
		if got := slices.Sorted(maps.Keys(obj)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
			t.Errorf("line %d: %s has keys %v, want %v", i+1, typ, got, want)
		}
		for k, v := range obj {
			_, isString := v.(string)
			_, isNumber := v.(float64)
			if slices.Contains(stringFields, k) && !isString || !slices.Contains(stringFields, k) && !isNumber {
				t.Errorf("line %d: %s is %T", i+1, k, v)
			}
		}
		if _, err := time.Parse(time.RFC3339Nano, obj["time"].(string)); err != nil {
			t.Errorf("line %d: %v", i+1, err)
		}
		if (typ == "result") != (i == len(lines)-1) {
			t.Errorf("line %d: a result must be the last line, and only it: %s", i+1, line)
		}
		switch typ {
		case "progress":
			lastProgress[obj["disk"].(string)] = obj
		case "disk-state":
			lastState[obj["disk"].(string)] = obj["state"].(string)
		case "result":
			if obj["state"] != sc.result.State || obj["error"] != sc.result.Error ||
				obj["bytes"] != float64(sc.result.Bytes) || obj["elapsed_ms"] != float64(sc.result.Elapsed.Milliseconds()) {
				t.Errorf("result %s, want %+v", line, sc.result)
			}
		}
	}
	for _, d := range sc.samples[0].Disks {
		if !DiskState(lastState[d.Name]).Final() {
			t.Errorf("disk %s ends in state %q", d.Name, lastState[d.Name])
		}
		if sc.result.State != JobCompleted {
			continue
		}
		if p := lastProgress[d.Name]; p == nil || p["done"] != p["total"] {
			t.Errorf("completed job: last progress of %s is %v, want done == total", d.Name, p)
		}
	}
}

// Progress is written only when a disk's numbers change.
func TestJSONOnlyChanges(t *testing.T) {
	var b strings.Builder
	p := NewJSON(&b)
	s := Sample{At: t0, Mode: ModePush, Disks: []Disk{{"vda", 0, GiB, DiskRunning}}, Total: GiB}
	p.Update(s)
	n := strings.Count(b.String(), "\n")
	s.At = at(time.Second)
	p.Update(s)
	if got := strings.Count(b.String(), "\n"); got != n {
		t.Errorf("an unchanged sample wrote %q", b.String())
	}
}
