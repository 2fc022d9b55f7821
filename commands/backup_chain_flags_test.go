package commands

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestBackupChainFlags(t *testing.T) {
	wd, _ := os.Getwd()
	for _, tc := range []struct {
		args []string
		want backupOptions
	}{
		{[]string{"backup", "vm1", "--to", "/b"}, backupOptions{Domain: "vm1", Dir: "/b", Level: "auto", Disks: []string{}, Quiesce: "auto"}},
		{[]string{"backup", "--to", "rel", "vm1", "--level", "inc", "--disk", "vda", "--disk", "vdb", "--push", "--json"},
			backupOptions{Domain: "vm1", Dir: filepath.Join(wd, "rel"), Level: "inc", Disks: []string{"vda", "vdb"}, Push: true, JSON: true, Quiesce: "auto"}},
		{[]string{"backup", "vm1", "--to", "/b", "-q", "--level", "full"}, backupOptions{Domain: "vm1", Dir: "/b", Level: "full", Disks: []string{}, Quiet: true, Quiesce: "auto"}},
	} {
		got, r := parse(t, newBackupCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: options %+v, want %+v", tc.args, got, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want restoreOptions
	}{
		{[]string{"restore", "--from", "/b", "--to", "/r"}, restoreOptions{From: "/b", To: "/r", At: "latest", Format: "qcow2", Disks: []string{}}},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--at", "vbackup-20261124T120000Z", "--format", "raw", "--disk", "vda", "--define", "vm1-copy"},
			restoreOptions{From: "/b", To: "/r", At: "vbackup-20261124T120000Z", Format: "raw", Disks: []string{"vda"}, Define: "vm1-copy"}},
	} {
		got, r := parse(t, newRestoreCommand, tc.args...)
		wantCode(t, r, ExitOK)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: options %+v, want %+v", tc.args, got, tc.want)
		}
	}
	if got, r := parse(t, newVerifyCommand, "verify", "--from", "/b"); r.code != ExitOK || got != (verifyOptions{From: "/b", At: "all"}) {
		t.Errorf("verify --from /b: %+v, exit %d", got, r.code)
	}
	if got, r := parse(t, newBackupsCommand, "backups", "/b", "--json"); r.code != ExitOK || got != (backupsOptions{Dir: "/b", JSON: true}) {
		t.Errorf("backups /b --json: %+v, exit %d", got, r.code)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "vm1"}, `Required flag "to" not set`},
		{[]string{"backup", "--to", "/b"}, "missing DOMAIN argument"},
		{[]string{"backup", "vm1", "--to", "/b", "--level", "weekly"}, `--level "weekly": use auto, full or inc`},
		{[]string{"backup", "vm1", "--to", "/b", "--json", "--quiet"}, "--json and --quiet cannot be used together"},
		{[]string{"restore", "--from", "/b"}, `--to is required`},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--format", "vmdk"}, `--format "vmdk": use qcow2 or raw`},
		{[]string{"restore", "--from", "/b", "--to", "/r", "--define", "a/b"}, `--define "a/b": give a domain name`},
		{[]string{"restore", "vm1", "--from", "/b", "--to", "/r"}, `unexpected argument "vm1": restore takes only flags`},
		{[]string{"verify"}, `Required flag "from" not set`},
		{[]string{"backups"}, "missing DIR argument"},
	} {
		r := vb(t, nil, tc.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want 2\n%s", tc.args, r.code, r.stderr)
			continue
		}
		wantStderr(t, r, tc.want, "usage: vbackup")
	}
}

// libvirt's test driver runs no backup jobs: 'backup' says so and leaves
// no trace, neither a checkpoint nor a folder.
func TestBackupOnTestDriver(t *testing.T) {
	open := testDriver(t)
	dir := filepath.Join(t.TempDir(), "b")
	r := vb(t, open, "backup", "vm1", "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "this libvirt driver cannot run backup jobs", "QEMU driver")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a refused backup made %s", dir)
	}
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "\n" {
		t.Errorf("checkpoints after a refused backup: %q", r.stdout)
	}
	r = vb(t, open, "backup", "vm9", "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "vm9")
}
