package commands

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// guestLoad makes the shared guest write without pause (8 files of 256 KiB
// in turn, and a counter), until t ends.
func guestLoad(t *testing.T, bed *testbed.Bed, dom string) {
	t.Helper()
	pid := bed.GuestStart(t, dom, `i=0; while :; do i=$((i+1)); dd if=/dev/urandom of=`+testbed.GuestDataDir+`/load.$((i%8)) bs=64k count=4 2>/dev/null; echo $i > `+testbed.GuestDataDir+`/counter; done`)
	t.Cleanup(func() { bed.GuestRun(t, dom, "kill "+strconv.Itoa(pid)) })
	// It runs: the counter moves (slowly under TCG on a loaded machine).
	counter := testbed.GuestDataDir + "/counter"
	first := bed.GuestRun(t, dom, "i=0; while [ ! -s "+counter+" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; cat "+counter)
	if again := bed.GuestRun(t, dom, "sleep 3; cat "+counter); again == first {
		t.Fatalf("the guest's write load does not run: its counter stays at %s", first)
	}
}

// restoreRaw restores the latest backup of dir as a raw image and returns
// the image of vda.
func restoreRaw(t *testing.T, open OpenFunc, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored")
	r := vb(t, open, "restore", "--from", dir, "--to", out, "--format", "raw", "--disk", "vda")
	wantCode(t, r, ExitOK)
	return filepath.Join(out, "vda.raw")
}

// needsRecovery reads the ext4 superblock's needs_recovery flag: set while
// a journalled filesystem is mounted, cleared when it is frozen (or
// unmounted) with its journal flushed.
func needsRecovery(t *testing.T, image string) bool {
	t.Helper()
	out := testbed.Run(t, "dumpe2fs", "-h", image)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Filesystem features:") {
			return strings.Contains(line, "needs_recovery")
		}
	}
	t.Fatalf("dumpe2fs -h %s lists no features:\n%s", image, out)
	return false
}

// mountRO mounts image read-only on a loop device, as an admin checking a
// restored disk would; it returns the mount point, or mount's complaint.
func mountRO(t *testing.T, image string) (string, error) {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command("mount", "-o", "loop,ro", image, mnt).CombinedOutput()
	if err != nil {
		return "", errors.New(strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt, nil
}

// The honest check of a freeze, on a booted guest that writes all along: a
// backup taken unfrozen, restored and mounted read-only, is refused by the
// kernel (its journal needs replaying); the same backup taken with the
// guest frozen (--quiesce yes, and auto, the default) mounts clean and
// shows the guest's files.
func TestQuiesceRealGuest(t *testing.T) {
	open, bed := realDaemon(t)
	testbed.Need(t, "dumpe2fs", "mount", "umount", "losetup")
	dom := bed.Guest(t)
	bed.GuestRun(t, dom, "echo before the backups > "+testbed.GuestDataDir+"/marker; sync")
	guestLoad(t, bed, dom)

	unfrozen := filepath.Join(bed.Folder(t), "b")
	r := vb(t, open, "backup", dom, "--to", unfrozen, "--quiesce", "no")
	wantCode(t, r, ExitOK)
	if strings.Contains(r.stdout+r.stderr, "frozen") {
		t.Errorf("--quiesce no froze the guest:\n%s", r.stdout)
	}
	img := restoreRaw(t, open, unfrozen)
	if !needsRecovery(t, img) {
		t.Errorf("the unfrozen backup's ext4 does not need recovery: it should hold the filesystem as mounted, mid-write")
	}
	if mnt, err := mountRO(t, img); err == nil {
		t.Errorf("the unfrozen backup mounted read-only on %s; the kernel should refuse it (its journal needs replaying)", mnt)
	} else {
		t.Logf("the unfrozen backup, mounted read-only: %v", err)
	}

	for _, q := range []string{"yes", "auto"} {
		t.Run(q, func(t *testing.T) {
			dir := filepath.Join(bed.Folder(t), "b")
			args := []string{"backup", dom, "--to", dir}
			if q != "auto" {
				args = append(args, "--quiesce", q)
			}
			r := vb(t, open, args...)
			wantCode(t, r, ExitOK)
			wantStdout(t, r, "The guest agent of "+dom+" answers: its filesystems are frozen while the backup job starts",
				"Guest filesystems of "+dom+" frozen for ")
			t.Logf("--quiesce %s:\n%s", q, r.stdout)
			if st := string(bed.AgentCommand(t, dom, `{"execute":"guest-fsfreeze-status"}`)); st != `"thawed"` {
				t.Errorf("after the backup the guest is %s, want thawed", st)
			}
			img := restoreRaw(t, open, dir)
			if needsRecovery(t, img) {
				t.Errorf("the frozen backup's ext4 needs recovery: it was not frozen clean")
			}
			mnt, err := mountRO(t, img)
			if err != nil {
				t.Fatalf("the frozen backup does not mount read-only: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "marker")); err != nil || string(b) != "before the backups\n" {
				t.Errorf("the frozen backup's marker: %q, %v", b, err)
			}
			if _, err := os.Stat(filepath.Join(mnt, "counter")); err != nil {
				t.Errorf("the frozen backup lacks the guest's writes: %v", err)
			}
		})
	}

	// backup-begin freezes the same way.
	r = vb(t, open, "backup-begin", dom, "--quiesce", "yes", "--target-dir", bed.Folder(t), "--wait")
	wantCode(t, r, ExitOK)
	wantStdout(t, r, "Guest filesystems of "+dom+" frozen for ")
	if st := string(bed.AgentCommand(t, dom, `{"execute":"guest-fsfreeze-status"}`)); st != `"thawed"` {
		t.Errorf("after backup-begin the guest is %s, want thawed", st)
	}
}

// On a domain without a guest agent (the bed's no-OS domains): --quiesce
// yes fails with a clear error and changes nothing; auto backs up and says
// that no agent answered.
func TestQuiesceWithoutAgent(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	dir := filepath.Join(bed.Folder(t), "b")
	r := vb(t, open, "backup", dom, "--to", dir, "--quiesce", "yes")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `domain "`+dom+`": --quiesce yes, but no guest agent answers (argument unsupported: QEMU guest agent is not configured)`,
		"--quiesce auto")
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--quiesce yes without an agent made %s: %v", dir, err)
	}
	if cps := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); cps != "" {
		t.Errorf("--quiesce yes without an agent left checkpoints: %s", cps)
	}

	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantStdout(t, r, "No guest agent answers in "+dom+" (argument unsupported: QEMU guest agent is not configured): the backup holds the disks as after a power cut (crash-consistent)")

	r = vb(t, open, "backup-begin", dom, "--quiesce", "yes", "--target-dir", bed.Folder(t))
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--quiesce yes, but no guest agent answers")
	if st := strings.TrimSpace(bed.Virsh(t, "domjobinfo", dom)); !strings.Contains(st, "None") {
		t.Errorf("backup-begin --quiesce yes without an agent started a job:\n%s", st)
	}
}

func wantStdout(t *testing.T, r result, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.stdout, p) {
			t.Errorf("stdout lacks %q:\n%s", p, r.stdout)
		}
	}
}
