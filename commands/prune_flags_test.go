package commands

import (
	"strings"
	"testing"
	"time"

	"vbackup/engine"
)

func TestPruneFlags(t *testing.T) {
	got, r := parse(t, newPruneCommand, "prune", "--from", "/b", "--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "2d", "--dry-run")
	wantCode(t, r, ExitOK)
	want := engine.Policy{Daily: 7, Weekly: 4, Within: engine.Within{Days: 2, Text: "2d"}, Loc: time.UTC}
	if got.Dir != "/b" || !got.DryRun || got.Policy != want {
		t.Errorf("options %+v, want policy %+v", got, want)
	}
	got, r = parse(t, newPruneCommand, "prune", "--from", "/b", "--keep-last", "3", "--local-time", "--json")
	wantCode(t, r, ExitOK)
	if got.Policy.Last != 3 || got.Policy.Loc != time.Local || !got.JSON {
		t.Errorf("options %+v", got)
	}
	// Bad input: exit 2, saying what was wrong and what would be right.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--from", "/b"}, "say what to keep: at least one of --keep-last"},
		{[]string{"prune", "--from", "/b", "--keep-daily", "0"}, "say what to keep"},
		{[]string{"prune", "--from", "/b", "--keep-daily", "-1"}, `--keep-daily "-1": give a whole number of backups, 0 or more`},
		{[]string{"prune", "--from", "/b", "--keep-last", "two"}, `--keep-last "two": give a whole number`},
		{[]string{"prune", "--from", "/b", "--keep-monthly", "1.5"}, `--keep-monthly "1.5": give a whole number`},
		{[]string{"prune", "--from", "/b", "--keep-within", "2w"}, `"2w" is not a span: write years (y), months (m), days (d) and hours (h)`},
		{[]string{"prune", "--from", "/b", "--keep-within", "0d"}, "--keep-within 0d: give a span above 0"},
		{[]string{"prune", "--keep-daily", "7"}, `"from" not set`},
		{[]string{"prune", "--from", "/b", "--keep-daily", "7", "extra"}, "takes only flags"},
	} {
		_, r := parse(t, newPruneCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
	}
}

func TestBackupChainAndCompressFlags(t *testing.T) {
	got, r := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b", "--max-chain", "6", "--compress", "zstd")
	wantCode(t, r, ExitOK)
	if got.MaxChain != 6 || got.Compress != "zstd" {
		t.Errorf("options %+v", got)
	}
	if got, _ := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b", "--compress", "none"); got.Compress != "" {
		t.Errorf("--compress none: %q", got.Compress)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "vm1", "--to", "/b", "--max-chain", "0"}, `--max-chain "0": give the number of incrementals after which a full backup is made, 1 or more`},
		{[]string{"backup", "vm1", "--to", "/b", "--max-chain", "abc"}, `--max-chain "abc": give the number`},
		{[]string{"backup", "vm1", "--to", "/b", "--max-chain", "3", "--level", "inc"}, "--max-chain cannot be used with --level inc"},
		{[]string{"backup", "vm1", "--to", "/b", "--compress", "lz4"}, `--compress "lz4": use zstd, zlib or none`},
		{[]string{"backup", "vm1", "--to", "/b", "--compress", "zstd", "--push"}, "--compress zstd cannot be used with --push"},
	} {
		_, r := parse(t, newBackupCommand, tc.args...)
		wantCode(t, r, ExitUsage)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
	}
}
