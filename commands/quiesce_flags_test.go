package commands

import (
	"testing"

	"vbackup/job"
)

// --quiesce takes auto (the default), yes or no, in backup and backup-begin.
func TestQuiesceFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want job.Quiesce
	}{
		{[]string{"backup", "vm1", "--to", "/b"}, job.QuiesceAuto},
		{[]string{"backup", "vm1", "--to", "/b", "--quiesce", "yes"}, job.QuiesceYes},
		{[]string{"backup", "vm1", "--quiesce", "no", "--to", "/b"}, job.QuiesceNo},
	} {
		got, r := parse(t, newBackupCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if got.Quiesce != tc.want {
			t.Errorf("%v: Quiesce %q, want %q", tc.args, got.Quiesce, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want job.Quiesce
	}{
		{[]string{"backup-begin", "vm1"}, job.QuiesceAuto},
		{[]string{"backup-begin", "vm1", "--pull", "--quiesce", "yes"}, job.QuiesceYes},
	} {
		got, r := parse(t, newBackupBeginCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if got.Quiesce != tc.want {
			t.Errorf("%v: Quiesce %q, want %q", tc.args, got.Quiesce, tc.want)
		}
	}
	_, r := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b", "--quiesce", "maybe")
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, `--quiesce "maybe": use auto`, "yes (freeze or fail) or no")
	_, r = parse(t, newBackupBeginCommand, "backup-begin", "vm1", "--quiesce", "always")
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, `--quiesce "always": use auto`)
}
