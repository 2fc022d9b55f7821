package commands

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/virt"
)

// killHalfWay runs 'vbackup backup' as its own process and sends sig once
// the fetch has copied part, not all, of the data. It returns stderr. A
// SIGTERM, which vbackup handles as Ctrl-C, must end it with status 130
// once it has cleaned up; SIGKILL kills it.
func killHalfWay(t *testing.T, bed *testbed.Bed, dom, dir string, sig syscall.Signal) string {
	t.Helper()
	code := ExitInterrupted
	if sig == syscall.SIGKILL {
		code = -1 // killed: no exit status
	}
	return halfWay(t, bed, dom, dir, code, func(cmd *exec.Cmd) error { return cmd.Process.Signal(sig) })
}

// interruptPushHalfWay is killHalfWay for a push backup, with Ctrl-C.
func interruptPushHalfWay(t *testing.T, bed *testbed.Bed, dom, dir string) string {
	t.Helper()
	return halfWay(t, bed, dom, dir, ExitInterrupted, func(cmd *exec.Cmd) error { return cmd.Process.Signal(syscall.SIGINT) }, "--push")
}

// halfWay runs 'vbackup backup' as its own process and does what once the
// fetch has copied part, not all, of the data. It returns stderr, once the
// process has ended with status code.
func halfWay(t *testing.T, bed *testbed.Bed, dom, dir string, code int, what func(*exec.Cmd) error, flags ...string) string {
	t.Helper()
	r := startJSON(t, append([]string{"-c", bed.URI(), "backup", dom, "--to", dir, "--json"}, flags...)...)
	stderr := &r.stderr
	killed := false
	if r.midway(0) {
		if err := what(r.cmd); err != nil {
			t.Fatal(err)
		}
		killed = true
	}
	err := r.wait()
	if !killed {
		t.Fatalf("the backup ended before it could be stopped half-way (%v):\n%s", err, stderr.String())
	}
	if err == nil {
		t.Fatalf("a backup stopped half-way exited 0:\n%s", stderr.String())
	}
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != code {
		t.Fatalf("a backup stopped half-way: %v, want exit status %d\n%s", err, code, stderr.String())
	}
	return stderr.String()
}

func hiddenEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && e.Name() != ".vbackup.lock" {
			out = append(out, e.Name())
		}
	}
	return out
}

// A backup stopped half-way (SIGTERM: it cleans up; SIGKILL: the next run
// does) changes nothing in the chain and leaves no checkpoint; the next
// backup still holds every change since the last complete one.
func TestBackupStoppedHalfWay(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:1G", "vdb:qcow2:1G")
	bed.Write(t, dom, "vda", 0x11, 0, 1<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0]

	// A: enough changed data for the incremental to take a while.
	done := make(chan struct{})
	go func() { bed.Write(t, dom, "vdb", 0xaa, 0, 700<<20); close(done) }()
	bed.Write(t, dom, "vda", 0xaa, 100<<20, 700<<20)
	<-done

	stderr := killHalfWay(t, bed, dom, dir, syscall.SIGTERM)
	for _, want := range []string{"ending the backup; nothing of it will be kept", "Checkpoint vbackup-", "deleted", "is as it was"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr after SIGTERM lacks %q:\n%s", want, stderr)
		}
	}
	if got := backupLevels(t, dir); len(got) != 1 {
		t.Errorf("after SIGTERM the folder holds %v, want only the full backup", got)
	}
	if left := hiddenEntries(t, dir); len(left) != 0 {
		t.Errorf("after SIGTERM the folder holds %v", left)
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != first.Name() {
		t.Errorf("checkpoints after SIGTERM: %q, want only %s", out, first.Name())
	}

	bed.Write(t, dom, "vda", 0xbb, 900<<20, 1<<20) // B
	killHalfWay(t, bed, dom, dir, syscall.SIGKILL)
	// Nothing could clean up: the partial folder is hidden, and no manifest
	// names the checkpoint.
	if got := backupLevels(t, dir); len(got) != 1 {
		t.Errorf("after SIGKILL the folder holds %v, want only the full backup", got)
	}

	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "removed the unfinished backup", "lost its vbackup process", "Checkpoint vbackup-", "deleted: it would have claimed data that was not saved")
	if !strings.Contains(r.stdout, "incremental (changes since backup "+first.Name()+")") {
		t.Errorf("the backup after the stopped ones:\n%s", r.stdout)
	}
	if out := strings.Fields(bed.Virsh(t, "checkpoint-list", dom, "--name")); len(out) != 1 || out[0] != storeBackups(t, dir)[1].Name() {
		t.Errorf("checkpoints: %v, want the newest backup's alone", out)
	}
	if left := hiddenEntries(t, dir); len(left) != 0 {
		t.Errorf("the folder still holds %v", left)
	}
	want := sourceSums(t, bed, dom, "vda", "vdb")
	last := storeBackups(t, dir)[1]
	for _, d := range last.Disks {
		if d.Checksum != want[d.Name] {
			t.Errorf("%s: the backup holds %s, the disk is %s", d.Name, d.Checksum, want[d.Name])
		}
	}
	if got := topLayerData(t, last.File(last.Disks[0])); got != "104857600+734003200 943718400+1048576" {
		t.Errorf("the vda overlay holds %s, want A and B", got)
	}
}

// smallDisk mounts a tmpfs of size bytes for the test: a folder that fills.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// A backup folder that fills up: the backup fails saying so, the folder
// holds what it held, and no checkpoint claims the changes.
func TestBackupDiskFull(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	dir := filepath.Join(smallDisk(t, "16M"), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()

	bed.Write(t, dom, "vda", 0xaa, 8<<20, 24<<20) // more than the folder has room for
	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "no space left on device", "Checkpoint vbackup-", "deleted", "is as it was")
	if got := backupLevels(t, dir); len(got) != 1 {
		t.Errorf("after a full disk the folder holds %v", got)
	}
	if left := hiddenEntries(t, dir); len(left) != 0 {
		t.Errorf("after a full disk the folder holds %v", left)
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != first {
		t.Errorf("checkpoints after a full disk: %q, want only %s", out, first)
	}
	// Room again: the next backup still holds every change.
	big := filepath.Join(t.TempDir(), "big")
	testbed.Run(t, "cp", "-a", dir, big)
	r = vb(t, open, "backup", dom, "--to", big)
	wantCode(t, r, ExitOK)
	want := sourceSums(t, bed, dom, "vda")
	last := storeBackups(t, big)[1]
	if last.Disks[0].Checksum != want["vda"] || last.Disks[0].Level != "incremental" {
		t.Errorf("the backup after the full disk: %s %s, the disk is %s", last.Disks[0].Level, last.Disks[0].Checksum, want["vda"])
	}
}

// While 'vbackup backup' checksums and commits, its job has ended but its
// manifest is not written: other vbackup commands leave its checkpoint
// alone, and refuse to start a job, until its process is gone.
func TestFinishingBackupIsLeftAlone(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	dir := t.TempDir()
	wantCode(t, vb(t, open, "checkpoint-create-as", dom, "vbackup-x"), ExitOK)
	d := domainHandle(t, open, dom)
	host, _ := os.Hostname()
	rec := virt.BackupRecord{Checkpoint: "vbackup-x", Pull: true, Started: time.Now(), Dir: dir, Host: host, PID: os.Getpid()}
	if err := d.SetBackupRecord(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	wantCode(t, vb(t, open, "backup-status", dom), ExitOK)
	r := vb(t, open, "backup-begin", dom, "--pull")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "is still finishing; wait for it")
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "is still finishing; wait for it")
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "vbackup-x" {
		t.Fatalf("the finishing backup's checkpoint is gone: %q", out)
	}

	// Its process gone, the next command settles it.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	rec.PID = dead.Process.Pid
	if err := d.SetBackupRecord(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	r = vb(t, open, "backup-status", dom)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "did not finish", "Checkpoint vbackup-x deleted")
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "" {
		t.Errorf("checkpoints after settling: %q", out)
	}
}

// The domain stops in the middle of a backup: the backup fails, and its
// checkpoint goes all the same (libvirt deletes only the metadata of an
// inactive domain's checkpoint).
func TestBackupDomainStops(t *testing.T) {
	_, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 700)
	dir := filepath.Join(t.TempDir(), "backups")
	stderr := halfWay(t, bed, dom, dir, ExitFailure, func(*exec.Cmd) error {
		_, err := bed.TryVirsh("destroy", dom)
		return err
	})
	for _, want := range []string{"Checkpoint vbackup-", "deleted", "is as it was"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "while cleaning up") {
		t.Errorf("the cleanup reports problems:\n%s", stderr)
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "" {
		t.Errorf("checkpoints after the domain stopped: %q", out)
	}
	if s, err := os.ReadDir(dir); err == nil && len(s) > 1 {
		t.Errorf("the folder holds %v", s)
	}
	// QEMU died with its socket in place; the socket's folder goes all the same.
	if _, err := os.Stat("/run/vbackup/" + dom); os.Geteuid() == 0 && !os.IsNotExist(err) {
		t.Errorf("the NBD socket folder of %s is still there after the failed backup (%v)", dom, err)
	}
}

// Ctrl-C in a push backup: the watcher ends the job, and the checkpoint and
// the partial folder go.
func TestBackupPushInterrupted(t *testing.T) {
	_, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 700)
	dir := filepath.Join(bed.Folder(t), "backups")
	stderr := interruptPushHalfWay(t, bed, dom, dir)
	for _, want := range []string{"interrupted by SIGINT: ending the backup job", "deleted", "is as it was"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "" {
		t.Errorf("checkpoints after Ctrl-C: %q", out)
	}
	if left := hiddenEntries(t, dir); len(left) != 0 {
		t.Errorf("after Ctrl-C the folder holds %v", left)
	}
	if out := bed.Virsh(t, "domjobinfo", dom); !strings.Contains(out, "None") {
		t.Errorf("a job still runs after Ctrl-C:\n%s", out)
	}
}
