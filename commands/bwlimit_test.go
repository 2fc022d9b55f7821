package commands

import "testing"

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "4096": 4096, "500k": 500 << 10, "500K": 500 << 10, "500KiB": 500 << 10, "500KB": 500_000,
		"50M": 50 << 20, "50m": 50 << 20, "50MiB": 50 << 20, "50MB": 50_000_000, "1.5G": 3 << 29, "1.5GB": 1_500_000_000,
		"2T": 2 << 40, "0.5k": 512,
	} {
		if got, ok := parseRate(in); !ok || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "0", "0M", "-5M", "5X", "M", "5 M", "1e6", "5Mi", "0.4", "fast", "5M/s", "99999999999T"} {
		if got, ok := parseRate(in); ok {
			t.Errorf("parseRate(%q) = %d, want refused", in, got)
		}
	}
}

// --bwlimit reaches each command's options as bytes per second; a RATE
// that does not parse is a usage error naming the forms.
func TestBWLimitFlags(t *testing.T) {
	got, r := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b", "--bwlimit", "4M")
	wantCode(t, r, ExitOK)
	if got.BWLimit != 4<<20 {
		t.Errorf("backup --bwlimit 4M: %d bytes/s, want %d", got.BWLimit, 4<<20)
	}
	many, r := parse(t, newBackupCommand, "backup", "--all", "--to", "/b", "--bwlimit", "1.5G", "--parallel", "2")
	wantCode(t, r, ExitOK)
	if many.BWLimit != 3<<29 || !many.Many.On {
		t.Errorf("backup --all --bwlimit 1.5G: %d bytes/s (many %v), want %d", many.BWLimit, many.Many.On, 3<<29)
	}
	fetched, r := parse(t, newBackupFetchCommand, "backup-fetch", "vm1", "--to", "/b", "--bwlimit", "500k")
	wantCode(t, r, ExitOK)
	if fetched.BWLimit != 500<<10 {
		t.Errorf("backup-fetch --bwlimit 500k: %d bytes/s", fetched.BWLimit)
	}
	begun, r := parse(t, newBackupBeginCommand, "backup-begin", "vm1", "--pull", "--fetch", "/b", "--bwlimit", "1000")
	wantCode(t, r, ExitOK)
	if begun.BWLimit != 1000 {
		t.Errorf("backup-begin --fetch --bwlimit 1000: %d bytes/s", begun.BWLimit)
	}
	restored, r := parse(t, newRestoreCommand, "restore", "--from", "/b", "--to", "/r", "--bwlimit", "10MB")
	wantCode(t, r, ExitOK)
	if restored.BWLimit != 10_000_000 {
		t.Errorf("restore --bwlimit 10MB: %d bytes/s", restored.BWLimit)
	}
	if got, r := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b"); r.code != ExitOK || got.BWLimit != 0 {
		t.Errorf("backup without --bwlimit: %d bytes/s (exit %d), want no cap", got.BWLimit, r.code)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "vm1", "--to", "/b", "--bwlimit", "fast"}, `--bwlimit "fast": give the cap in bytes per second: 500k, 50M, 1.5G or plain bytes`},
		{[]string{"backup", "vm1", "--to", "/b", "--bwlimit", "0"}, `--bwlimit "0": give the cap in bytes per second`},
		{[]string{"backup", "vm1", "vm2", "--to", "/b", "--bwlimit", "-4M"}, `--bwlimit "-4M": give the cap`},
		{[]string{"backup", "vm1", "--to", "/b", "--bwlimit", "4M", "--push"}, "--bwlimit cannot be used with --push"},
		{[]string{"backup-fetch", "vm1", "--to", "/b", "--bwlimit", "4Q"}, `--bwlimit "4Q": give the cap`},
		{[]string{"backup-begin", "vm1", "--pull", "--bwlimit", "4M"}, "--bwlimit"},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--bwlimit", ""}, `--bwlimit "": give the cap`},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--define", "v2", "--instant", "--bwlimit", "4M"}, "--instant and --finish copy nothing through vbackup"},
		{[]string{"restore", "--from", "/b", "--disk", "vda=/dev/sdz", "--bwlimit", "4M"}, "--bwlimit cannot cap a disk written onto its NAME=TARGET"},
	} {
		var r result
		switch tc.args[0] {
		case "backup":
			_, r = parse(t, newBackupCommand, tc.args...)
		case "backup-fetch":
			_, r = parse(t, newBackupFetchCommand, tc.args...)
		case "backup-begin":
			_, r = parse(t, newBackupBeginCommand, tc.args...)
		case "restore":
			_, r = parse(t, newRestoreCommand, tc.args...)
		}
		wantCode(t, r, ExitUsage)
		wantStderr(t, r, tc.want)
	}
}
