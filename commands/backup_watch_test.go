package commands

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/virt"
)

// bigDomain is a domain with two disks of size MiB holding data MiB each:
// a push of it takes long enough for several samples per disk and to be
// interrupted half-way (about a second per GiB here).
func bigDomain(t *testing.T, bed *testbed.Bed, size, data int64) string {
	t.Helper()
	dom := bed.Domain(t, "vda:qcow2:"+strconv.FormatInt(size, 10)+"M", "vdb:qcow2:"+strconv.FormatInt(size, 10)+"M")
	var wg sync.WaitGroup
	for i, disk := range []string{"vda", "vdb"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bed.Write(t, dom, disk, byte(0x11*(i+1)), 0, data<<20)
		}()
	}
	wg.Wait()
	return dom
}

func TestWaitJSON(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 2048, 1536)
	r := vb(t, open, "backup-begin", dom, "--target-dir", bed.Folder(t), "--checkpoint", "w1", "--wait", "--json")
	wantCode(t, r, ExitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	samples := map[string]int{}
	last := map[string]map[string]any{}
	for i, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
		switch obj["type"] {
		case "progress":
			disk, _ := obj["disk"].(string)
			samples[disk]++
			last[disk] = obj
		case "disk-state", "job", "result":
		default:
			t.Errorf("line %d: unknown type %v", i+1, obj["type"])
		}
		if obj["type"] == "result" && i != len(lines)-1 {
			t.Errorf("a result before the last line (%d of %d)", i+1, len(lines))
		}
	}
	var result map[string]any
	_ = json.Unmarshal([]byte(lines[len(lines)-1]), &result)
	if result["type"] != "result" || result["state"] != "completed" {
		t.Fatalf("last line %s, want a completed result", lines[len(lines)-1])
	}
	for _, disk := range []string{"vda", "vdb"} {
		if samples[disk] < 3 {
			t.Errorf("%s: %d progress lines, want several", disk, samples[disk])
		}
		done, total := last[disk]["done"], last[disk]["total"]
		if done != total || total == float64(0) || total == nil {
			t.Errorf("%s: last progress done %v total %v, want done == total > 0", disk, done, total)
		}
	}
	if !strings.Contains(r.stderr, "Backup started: push") {
		t.Errorf("with --json, the begin message goes to stderr:\n%s", r.stderr)
	}
}

func TestWaitPlainLines(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	r := vb(t, open, "backup-begin", dom, "--target-dir", bed.Folder(t), "--wait")
	wantCode(t, r, ExitOK)
	if strings.Contains(r.stderr, "\x1b") {
		t.Errorf("escape codes in non-terminal output:\n%q", r.stderr)
	}
	for _, want := range []string{"vda", "vdb", "completed"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("plain output lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestWaitQuiet(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	r := vb(t, open, "backup-begin", dom, "--target-dir", bed.Folder(t), "--wait", "--quiet")
	wantCode(t, r, ExitOK)
	if r.stdout != "" || r.stderr != "" {
		t.Errorf("--quiet printed:\nstdout %q\nstderr %q", r.stdout, r.stderr)
	}
}

// A job aborted from another process (virsh) makes --wait exit 1 with the
// reason, and the checkpoint made with it is gone.
func TestWaitJobAbortedElsewhere(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	var r result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r = vb(t, open, "backup-begin", dom, "--target-dir", bed.Folder(t), "--checkpoint", "x1", "--wait")
	}()
	waitForJob(t, bed, dom)
	bed.Virsh(t, "domjobabort", dom)
	wg.Wait()
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "cancel")
	if out := bed.Virsh(t, "checkpoint-list", dom, "--name"); strings.TrimSpace(out) != "" {
		t.Errorf("checkpoint left after the aborted job: %q", out)
	}
}

func TestWaitTimeout(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	// A pull job runs until it is ended: the timeout always comes first.
	r := vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "t1", "--wait", "--timeout", "300ms")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "timed out after 300ms", "Checkpoint t1 deleted")
	if out := bed.Virsh(t, "checkpoint-list", dom, "--name"); strings.TrimSpace(out) != "" {
		t.Errorf("checkpoint left after the timeout: %q", out)
	}
}

// Ctrl-C (SIGINT to the real binary) ends the job and deletes its
// checkpoint, and says so. A pull job runs until ended, so the signal always
// finds it running.
func TestWaitInterrupted(t *testing.T) {
	_, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	cmd := exec.Command(vbackupBinary(t), "-c", bed.URI(), "backup-begin", dom, "--pull", "--checkpoint", "i1", "--wait")
	stderrPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first progress line means the watcher, and its signal handler, runs.
	var stderr strings.Builder
	sc := bufio.NewScanner(stderrPipe)
	for sc.Scan() {
		stderr.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "vda:") || strings.HasPrefix(sc.Text(), "scratch:") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		stderr.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != ExitInterrupted {
		t.Fatalf("exit: %v, want %d\n%s", err, ExitInterrupted, stderr.String())
	}
	for _, want := range []string{"interrupted by SIGINT: ending the backup job", "Checkpoint i1 deleted"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if out := bed.Virsh(t, "domjobinfo", dom); !strings.Contains(out, "None") {
		t.Errorf("job still there after Ctrl-C:\n%s", out)
	}
	if out := bed.Virsh(t, "checkpoint-list", dom, "--name"); strings.TrimSpace(out) != "" {
		t.Errorf("checkpoint left after Ctrl-C: %q", out)
	}
	if _, err := os.Stat("/run/vbackup/" + dom); os.Geteuid() == 0 && !os.IsNotExist(err) {
		t.Errorf("the pull job's socket folder is left after Ctrl-C: %v", err)
	}
}

// On a terminal (a pseudo-terminal made by script(1)) each disk gets a bar,
// and a summary ends the output.
func TestWaitTerminalBars(t *testing.T) {
	_, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	line := strings.Join([]string{vbackupBinary(t), "-c", "'" + bed.URI() + "'", "backup-begin", dom, "--target-dir", bed.Folder(t), "--wait"}, " ")
	out, err := exec.Command("script", "-qec", "stty cols 100; "+line+" >/dev/null", "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	screen := string(out)
	for _, want := range []string{"vda", "vdb", "\x1b[", "completed"} {
		if !strings.Contains(screen, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, screen)
		}
	}
}

// backup-status --watch attaches to a job another process started.
func TestStatusWatch(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	bed.Virsh(t, "backup-begin", dom)
	r := vb(t, open, "backup-status", dom, "--watch", "--json")
	wantCode(t, r, ExitOK)
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	var lastLine string
	n := 0
	for sc.Scan() {
		lastLine = sc.Text()
		n++
	}
	if n < 3 || !strings.Contains(lastLine, `"completed"`) {
		t.Errorf("%d lines, last %s", n, lastLine)
	}
}

// waitForJob waits until the domain has a job running.
func waitForJob(t *testing.T, bed *testbed.Bed, dom string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := bed.TryVirsh("domjobinfo", dom); err == nil && strings.Contains(out, "Unbounded") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no job started within 30 s")
}

// A vbackup stopped while ending a job unfinished (a second Ctrl-C) leaves
// the job's record marked; the next vbackup command deletes the checkpoint.
func TestDiscardMarkIsHonoured(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	wantCode(t, vb(t, open, "checkpoint-create-as", dom, "d1"), ExitOK)
	d := domainHandle(t, open, dom)
	if err := d.SetBackupRecord(context.Background(), virt.BackupRecord{Checkpoint: "d1", Pull: true, Started: time.Now(), Discard: true}); err != nil {
		t.Fatal(err)
	}
	r := vb(t, open, "backup-status", dom)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "was being ended before it finished", "Checkpoint d1 deleted")
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "\n" {
		t.Errorf("checkpoints: %q", r.stdout)
	}
}
