package commands

import (
	"testing"
)

// The flag layer of restore's instant modes: what each asks of the others.
func TestRestoreInstantFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--from", "/b", "--to", "/r", "--instant"}, "--instant runs a new domain on the backup: name it with --define NAME"},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--instant", "--define", "x", "--format", "raw"}, "--instant makes qcow2 overlays: --format raw does not go with it"},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--start"}, "--start starts the domain --define NAME defines"},
		{[]string{"restore", "--finish", "x", "--to", "/r"}, "--finish x works on the domain as it runs: --to does not go with it"},
		{[]string{"restore", "--finish", "x", "--instant"}, "--instant does not go with it"},
		{[]string{"restore", "--to", "/r"}, "--from is required (or --finish NAME"},
	} {
		_, r := parse(t, newRestoreCommand, tc.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want 2\n%s", tc.args, r.code, r.stderr)
			continue
		}
		wantStderr(t, r, tc.want)
	}
	o, r := parse(t, newRestoreCommand, "restore", "--from", "/b", "--to", "r", "--instant", "--define", "vm2", "--start", "--at", "c1")
	wantCode(t, r, ExitOK)
	if !o.Instant || !o.Start || o.Define != "vm2" || o.At != "c1" || o.To == "r" || o.Format != "qcow2" {
		t.Errorf("options = %+v", o)
	}
	o, r = parse(t, newRestoreCommand, "restore", "--finish", "vm2", "--from", "/b")
	wantCode(t, r, ExitOK)
	if o.Finish != "vm2" || o.From != "/b" || o.Instant {
		t.Errorf("options = %+v", o)
	}
}
