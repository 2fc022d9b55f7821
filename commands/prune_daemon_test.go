package commands

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/chain"
)

// vbAt runs a command line as vb does, with the clock at now: backups of
// different days, taken in one test.
func vbAt(t *testing.T, open OpenFunc, now time.Time, args ...string) result {
	t.Helper()
	env, stdout, stderr := testEnv(open, nil)
	env.Now = func() time.Time { return now }
	code := Main(context.Background(), append([]string{"vbackup"}, args...), env)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// restoredSums restores backup name of dir and returns each disk's
// reference checksum.
func restoredSums(t *testing.T, open OpenFunc, dir, name string, disks ...string) map[string]string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored")
	wantCode(t, vb(t, open, "restore", "--from", dir, "--at", name, "--to", out), ExitOK)
	sums := map[string]string{}
	for _, d := range disks {
		sums[d] = imageSum(t, filepath.Join(out, d+".qcow2"), "qcow2")
	}
	return sums
}

// The proof of prune: a chain of four nightly backups pruned to the
// last of each month. The oldest full and a middle point go; each kept
// point restores to the domain's disks as they were at that point, verify
// passes, and the next backup is still incremental.
func TestPruneChainRestores(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	dir := filepath.Join(t.TempDir(), "backups")
	days := []time.Time{
		time.Date(2026, 10, 30, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 31, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC),
	}
	var points []map[string]string
	for i, day := range days {
		bed.Write(t, dom, "vda", byte(0x10+i), int64(i*6)<<20, 8<<20) // each overwrites part of the one before
		bed.Write(t, dom, "vdb", byte(0x20+i), int64(i)<<20, 1<<20)
		wantCode(t, vbAt(t, open, day, "backup", dom, "--to", dir), ExitOK)
		points = append(points, sourceSums(t, bed, dom, "vda", "vdb"))
	}
	names := []string{}
	for _, b := range storeBackups(t, dir) {
		names = append(names, b.Name())
	}

	dry := vb(t, open, "prune", "--from", dir, "--keep-monthly", "2", "--dry-run")
	wantCode(t, dry, ExitOK)
	if got := len(storeBackups(t, dir)); got != 4 || !strings.Contains(dry.stdout, "Would remove 2 of 4 backups") {
		t.Fatalf("--dry-run: %d backups left\n%s", got, dry.stdout)
	}

	r := vb(t, open, "prune", "--from", dir, "--keep-monthly", "2")
	wantCode(t, r, ExitOK)
	for _, want := range []string{"remove", "keep", "monthly", names[0] + ", disk vda: " + names[1] + "'s data", "goes up into " + names[3], "Removed 2 of 4 backups, kept 2"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("prune's output lacks %q:\n%s", want, r.stdout)
		}
	}
	kept := storeBackups(t, dir)
	if len(kept) != 2 || kept[0].Name() != names[1] || kept[1].Name() != names[3] {
		t.Fatalf("kept %v, want %s and %s", kept, names[1], names[3])
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	for i, at := range map[int]string{1: names[1], 3: names[3]} {
		got := restoredSums(t, open, dir, at, "vda", "vdb")
		for _, d := range []string{"vda", "vdb"} {
			if got[d] != points[i][d] {
				t.Errorf("backup %s, disk %s restores to %s, want the domain's %s", at, d, got[d], points[i][d])
			}
		}
	}

	bed.Write(t, dom, "vda", 0x99, 50<<20, 1<<20)
	r = vbAt(t, open, time.Date(2026, 11, 3, 1, 0, 0, 0, time.UTC), "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "incremental (changes since backup "+names[3]) {
		t.Errorf("the backup after prune is not incremental from the newest:\n%s", r.stdout)
	}
	// The merges kept the chunk digests true: only the change is read.
	if strings.Contains(r.stderr, "reading all") {
		t.Errorf("after prune the chunk digests were not usable:\n%s", r.stderr)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)

	// --json: one object.
	r = vb(t, open, "prune", "--from", dir, "--keep-last", "1", "--json")
	wantCode(t, r, ExitOK)
	var j struct {
		Kept, Removed []struct{ Backup string }
		Freed         uint64 `json:"freed_bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || len(j.Kept) != 1 || len(j.Removed) != 2 || j.Freed == 0 {
		t.Errorf("--json: %v\n%s", err, r.stdout)
	}
}

// A prune killed (SIGKILL) while it merges leaves every listed backup
// restorable and verifiable; the next prune completes it and says so.
func TestPruneKilled(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:512M")
	dir := filepath.Join(t.TempDir(), "backups")
	for i, size := range []int64{128, 256, 256} {
		bed.Write(t, dom, "vda", byte(0x30+i), int64(i)<<20, size<<20)
		wantCode(t, vbAt(t, open, time.Date(2026, 11, 1+i, 1, 0, 0, 0, time.UTC), "backup", dom, "--to", dir), ExitOK)
	}
	latest := sourceSums(t, bed, dom, "vda")

	// The oldest full's image, into which the next backup's data goes.
	full := storeBackups(t, dir)[0]
	killPruneDuring(t, full.File(full.Disks[0]), "--from", dir, "--keep-last", "1")
	// The point being removed is no longer listed; the others verify and
	// restore.
	listed := vb(t, open, "backups", dir)
	wantCode(t, listed, ExitOK)
	if n := strings.Count(listed.stdout, "vbackup-"); n != 2 {
		t.Errorf("after the kill %d backups are listed, want the 2 not being removed:\n%s", n, listed.stdout)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	if got := restoredSums(t, open, dir, "latest", "vda"); got["vda"] != latest["vda"] {
		t.Errorf("after the kill the newest backup restores to %s, want %s", got["vda"], latest["vda"])
	}

	r := vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "completing the removal of backup", "which an interrupted prune left half done")
	if n := len(storeBackups(t, dir)); n != 1 {
		t.Errorf("%d backups after the second prune, want 1", n)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	if got := restoredSums(t, open, dir, "latest", "vda"); got["vda"] != latest["vda"] {
		t.Errorf("after the second prune the newest backup restores to %s, want %s", got["vda"], latest["vda"])
	}
	if _, err := os.Stat(filepath.Join(dir, ".vbackup.removing")); !os.IsNotExist(err) {
		t.Errorf("the removal record is left: %v", err)
	}
}

// killPruneDuring runs 'vbackup prune ARGS' and kills it (SIGKILL) while
// it moves clusters into image: once the image has grown.
func killPruneDuring(t *testing.T, image string, args ...string) {
	t.Helper()
	fi, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	before := fi.Size()
	cmd := exec.Command(vbackupBinary(t), append([]string{"prune"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !killed; time.Sleep(time.Millisecond) {
		if fi, err := os.Stat(image); err == nil && fi.Size() > before {
			killed = cmd.Process.Signal(syscall.SIGKILL) == nil
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the prune ended before it could be killed while it wrote %s: %v\n%s", image, err, stderr.String())
	}
}

// A prune killed while it rebases a point past a removed middle one: the
// listed backups verify and restore, and the next prune completes it.
func TestPruneKilledWhileRebasing(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:512M")
	dir := filepath.Join(t.TempDir(), "backups")
	days := []time.Time{time.Date(2026, 10, 30, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 31, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC)}
	var points []map[string]string
	for i, size := range []int64{64, 64, 256, 1} {
		bed.Write(t, dom, "vda", byte(0x50+i), int64(i*8)<<20, size<<20)
		wantCode(t, vbAt(t, open, days[i], "backup", dom, "--to", dir), ExitOK)
		points = append(points, sourceSums(t, bed, dom, "vda"))
	}
	names := []string{}
	for _, b := range storeBackups(t, dir) {
		names = append(names, b.Name())
	}
	// The oldest full goes into October's last; November's first goes up
	// into the newest, killed then.
	killPruneDuring(t, filepath.Join(dir, names[3], "vda.qcow2"), "--from", dir, "--keep-monthly", "2")
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	if got := restoredSums(t, open, dir, names[3], "vda"); got["vda"] != points[3]["vda"] {
		t.Errorf("after the kill %s restores to %s, want %s", names[3], got["vda"], points[3]["vda"])
	}
	r := vb(t, open, "prune", "--from", dir, "--keep-monthly", "2")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "completing the removal of backup "+names[2])
	kept := storeBackups(t, dir)
	if len(kept) != 2 || kept[0].Name() != names[1] || kept[1].Name() != names[3] {
		t.Fatalf("kept %v", kept)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	for i, at := range map[int]string{1: names[1], 3: names[3]} {
		if got := restoredSums(t, open, dir, at, "vda"); got["vda"] != points[i]["vda"] {
			t.Errorf("%s restores to %s, want %s", at, got["vda"], points[i]["vda"])
		}
	}
}

// A prune and a backup exclude each other: the second is refused, saying
// why, and changes nothing.
func TestPruneLocked(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	unlock, err := chain.Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	before := backupLevels(t, dir)
	r := vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "another vbackup command is writing "+dir)
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "another vbackup command is writing "+dir)
	if after := backupLevels(t, dir); strings.Join(after, "|") != strings.Join(before, "|") {
		t.Errorf("a refused command changed the folder: %v, was %v", after, before)
	}
	if out := bed.Virsh(t, "checkpoint-list", dom, "--name"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("a refused backup left checkpoints: %q", out)
	}
}
