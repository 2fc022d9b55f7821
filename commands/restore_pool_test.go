package commands

import "testing"

func TestRestorePoolFlags(t *testing.T) {
	got, r := parse(t, newRestoreCommand, "restore", "--from", "/b", "--define", "vm2", "--pool", "default")
	wantCode(t, r, ExitOK)
	if got.Pool != "default" || got.Define != "vm2" || got.To != "" {
		t.Errorf("options %+v: want pool default, define vm2, no --to (it stages in $TMPDIR)", got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore", "--from", "/b", "--pool", "default"}, "--pool defines a domain on the volumes it writes: name it with --define NAME"},
		{[]string{"restore", "--from", "/b", "--define", "vm2", "--pool", ""}, "--pool needs the name of a storage pool"},
		{[]string{"restore", "--from", "/b", "--define", "vm2", "--pool", "default", "--instant", "--to", "/o"}, "--instant and --finish do not go with it"},
		{[]string{"restore", "--from", "/b", "--define", "vm2", "--pool", "default", "--disk", "vda=/dev/sdz"}, "--pool writes every disk as a volume: --disk NAME=TARGET does not go with it"},
		{[]string{"restore", "--from", "/b", "--define", "vm2"}, "--to is required"},
	} {
		_, r := parse(t, newRestoreCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		wantStderr(t, r, tc.want)
	}
}
