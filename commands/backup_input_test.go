package commands

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// Every bad input is a clear error with a non-zero exit; nothing starts, no
// file is touched, no checkpoint appears.
func TestBackupBeginBadInput(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	stopped := bed.Domain(t, "vda:qcow2:16M")
	bed.Virsh(t, "destroy", stopped)
	wantCode(t, vb(t, open, "checkpoint-create-as", dom, "c1"), ExitOK)
	dir := bed.Folder(t)
	existing := filepath.Join(dir, dom+".vda.c9.qcow2")
	if err := os.WriteFile(existing, []byte("an older backup"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"nodom"}, 1, []string{`domain "nodom" not found`}},
		{[]string{stopped}, 1, []string{"is shut off", "virsh start " + stopped}},
		{[]string{dom, "--disk", "vdz"}, 1, []string{`"vdz"`, "vda, vdb"}},
		{[]string{dom, "--disk", "vda", "--disk", "vda"}, 1, []string{"vda", "twice"}},
		{[]string{dom, "--disk", "vda,skip,target=/tmp/x.qcow2"}, 2, []string{"skip"}},
		{[]string{dom, "--disk", "vda,scratch=/tmp/s.qcow2"}, 1, []string{"scratch", "pull"}},
		{[]string{dom, "--pull", "--disk", "vda,target=/tmp/t.qcow2"}, 1, []string{"target", "push"}},
		{[]string{dom, "--target-dir", "relative/dir"}, 2, []string{"absolute path"}},
		{[]string{dom, "--disk", "vda,target=relative.qcow2"}, 2, []string{"absolute"}},
		{[]string{dom, "--target-dir", dir, "--checkpoint", "c9", "--disk", "vda"}, 1, []string{existing, "exists already", "never writes over"}},
		{[]string{dom, "--incremental", "nope"}, 1, []string{`has no checkpoint "nope"`, "c1"}},
		{[]string{dom, "--checkpoint", "c1"}, 1, []string{`already has a checkpoint "c1"`}},
		{[]string{dom, "--checkpoint", "a/b"}, 2, []string{"a/b"}},
		{[]string{dom, "--pull", "--server", "ftp:host"}, 2, []string{"ftp:host"}},
		{[]string{dom, "--pull", "--server", "tcp:127.0.0.1:70000"}, 2, []string{"70000"}},
		{[]string{dom, "--pull", "--server", "tcp:127.0.0.1:" + busyPort}, 1, []string{"port " + busyPort + " cannot be used"}},
		{[]string{dom, "--pull", "--server", "tcp:0.0.0.0:10809"}, 1, []string{"unencrypted", "--tls", "--insecure"}},
		{[]string{dom, "--incremental", "c1"}, 1, []string{`disk "vdb" is raw`, "--disk vdb,skip"}},
		{[]string{dom, "--push", "--pull"}, 2, []string{"--push and --pull"}},
		{[]string{dom, "--scratch-dir", "/tmp"}, 2, []string{"--scratch-dir is for pull backups"}},
		{[]string{dom, "--backupxml", "/nonexistent.xml"}, 2, []string{"--backupxml"}},
		{[]string{dom, "--backupxml", existing, "--pull"}, 2, []string{"--backupxml and --pull cannot be used together"}},
	} {
		r := vb(t, open, append([]string{"backup-begin"}, tc.args...)...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, r.code, tc.code, r.stderr)
			continue
		}
		wantStderr(t, r, tc.want...)
	}

	if r := vb(t, open, "backup-status", dom); !strings.Contains(r.stdout, "has no backup job running") {
		t.Errorf("a job is running after refused begins:\n%s", r.stdout)
	}
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "c1\n\n" {
		t.Errorf("checkpoints after refused begins: %q", r.stdout)
	}
	entries, _ := os.ReadDir(dir)
	if b, _ := os.ReadFile(existing); len(entries) != 1 || string(b) != "an older backup" {
		t.Errorf("the target folder changed: %d entries, existing file holds %q", len(entries), b)
	}
}

func TestBackupBeginTestDriverCannotRunJobs(t *testing.T) {
	open := testDriver(t)
	for _, args := range [][]string{{"backup-begin", "vm1"}, {"backup-status", "vm1"}, {"backup-end", "vm1"}} {
		r := vb(t, open, args...)
		wantCode(t, r, ExitFailure)
		wantStderr(t, r, "this libvirt driver cannot run backup jobs", "QEMU driver")
	}
}

// Every document backup-begin --print-xml prints validates against
// libvirt's installed schemas.
func TestBackupPrintXMLValidates(t *testing.T) {
	testbed.Need(t, "virt-xml-validate")
	open := testDriver(t)
	wantCode(t, vb(t, open, "checkpoint-create-as", "vm1", "c1"), ExitOK)
	tmp := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--target-dir", tmp, "--format", "raw", "--checkpoint", "c9", "--checkpoint-description", "nightly"},
		{"--target-dir", tmp, "--incremental", "c1", "--disk", "vdb,skip", "--checkpoint", "c9"},
		{"--disk", "vda,target=" + tmp + "/a.qcow2", "--disk", "vdb,type=block,target=/dev/sdz"},
		{"--disk", "vda,incremental=c1", "--disk", "vdb,full", "--target-dir", tmp},
		{"--pull"},
		{"--pull", "--server", "tcp:127.0.0.1"},
		{"--pull", "--server", "tcp:localhost:10809", "--tls", "--scratch-dir", tmp},
		{"--pull", "--incremental", "c1", "--disk", "vda,export=disk0,bitmap=b0", "--checkpoint", "c9"},
		{"--reuse-external", "--disk", "vda,target=/dev/null,type=block"},
	} {
		r := vb(t, open, append([]string{"backup-begin", "vm1", "--print-xml"}, args...)...)
		if r.code != ExitOK {
			t.Errorf("%v: exit %d\n%s", args, r.code, r.stderr)
			continue
		}
		backup, cp, _ := strings.Cut(r.stdout, "<domaincheckpoint>")
		validate(t, backup, "domainbackup")
		if cp != "" {
			validate(t, "<domaincheckpoint>"+cp, "domaincheckpoint")
		}
		if strings.Contains(strings.Join(args, " "), "--checkpoint") != (cp != "") {
			t.Errorf("%v: checkpoint document present: %v", args, cp != "")
		}
	}
	if r := vb(t, open, "checkpoint-list", "vm1", "--name"); r.stdout != "c1\n\n" {
		t.Errorf("--print-xml created a checkpoint: %q", r.stdout)
	}
}

func validate(t *testing.T, doc, schema string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), schema+".xml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("virt-xml-validate", f, schema).CombinedOutput(); err != nil {
		t.Errorf("%s does not validate: %v\n%s\n%s", schema, err, out, doc)
	}
}
