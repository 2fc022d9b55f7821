package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// fakeMany is an in-memory libvirt with running domains whose push
// backups write an empty qcow2, and the OpenFunc that hands it out.
func fakeMany(t *testing.T, names ...string) (*virtfake.Conn, map[string]*virtfake.Domain, OpenFunc) {
	t.Helper()
	conn := virtfake.New()
	doms := map[string]*virtfake.Domain{}
	for _, n := range names {
		d := conn.AddDomain(virtfake.DomainSpec{Name: n, Disks: []virt.Disk{{Target: "vda"}}})
		d.OnPushComplete(func(disk, target string) error {
			out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", target, "1M").CombinedOutput()
			if err != nil {
				return fmt.Errorf("qemu-img create: %v: %s", err, out)
			}
			return nil
		})
		doms[n] = d
	}
	return conn, doms, func(context.Context, string, io.Writer) (virt.Conn, error) { return keepOpen{conn}, nil }
}

// Three domains, one failing: the table on stdout (and only it), each
// domain's lines on stderr after its name, exit status 1 naming the one.
func TestBackupManyTable(t *testing.T) {
	_, doms, open := fakeMany(t, "web", "db", "mail")
	doms["db"].OnPushComplete(func(disk, target string) error { return errors.New("No space left on device") })
	dir := filepath.Join(t.TempDir(), "b")
	r := vb(t, open, "backup", "web", "db", "mail", "--to", dir, "--push", "--parallel", "2")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "error: 1 of 3 domains failed: db\n", "db: error: ", "web: Backup vbackup-", "mail: Backup vbackup-")
	table := regexp.MustCompile(`^DOMAIN +LEVEL +COPIED +TIME +RESULT\n` +
		`web +full +0 B +[0-9.]+m?s +ok\n` +
		`db +full +- +[0-9.]+m?s +failed: .*No space left on device.*\n` +
		`mail +full +0 B +[0-9.]+m?s +ok\n$`)
	if !table.MatchString(r.stdout) {
		t.Errorf("stdout is not the table:\n%s", r.stdout)
	}
	for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if !regexp.MustCompile(`^(web|db|mail): |^error: `).MatchString(line) {
			t.Errorf("a stderr line without its domain: %q", line)
		}
	}
	for _, d := range []string{"web", "mail"} {
		if s, err := chain.Open(filepath.Join(dir, d)); err != nil || len(s.Backups) != 1 {
			t.Errorf("%s's folder: %v", d, err)
		}
	}
}

// --json: one object per domain on stdout, nothing else; --all in a push
// skips the shut-off domain and leaves out the excluded ones; all ok: exit 0.
func TestBackupManyJSON(t *testing.T) {
	_, doms, open := fakeMany(t, "web", "test1", "old", "db")
	doms["old"].Stop()
	dir := filepath.Join(t.TempDir(), "b")
	r := vb(t, open, "backup", "--all", "--exclude", "test*", "--to", dir, "--push", "--json")
	wantCode(t, r, ExitOK)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var j jsonDomain
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		got = append(got, j.Domain+"="+j.Result)
		switch {
		case j.Type != "domain" || j.Dir != filepath.Join(dir, j.Domain):
			t.Errorf("line %q", line)
		case j.Result == "ok" && (j.Level != "full" || !strings.HasPrefix(j.Backup, "vbackup-") || j.Error != ""):
			t.Errorf("ok line %q", line)
		case j.Result == "skipped" && j.Reason != "shut off: a push needs it running (without --push its images are read directly)":
			t.Errorf("skipped line %q", line)
		}
	}
	if want := "db=ok old=skipped web=ok"; strings.Join(got, " ") != want {
		t.Errorf("results %v, want %s", got, want)
	}
}

// The same domain by name and by UUID: refused before anything starts.
func TestBackupManySameDomain(t *testing.T) {
	conn, doms, open := fakeMany(t, "web", "db")
	uuid, _ := doms["web"].UUID(context.Background())
	r := vb(t, open, "backup", "web", "db", uuid, "--to", t.TempDir(), "--push")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `"web" and "`+uuid+`" are the same domain web: name it once`)
	for _, c := range conn.Calls() {
		if c == "BeginBackup" {
			t.Errorf("a backup began")
		}
	}
	if r.stdout != "" {
		t.Errorf("stdout: %q", r.stdout)
	}
}

// Ctrl-C while the first of three backups runs: it is ended and undone,
// the others are not run; the table says so, and the exit status is 130.
func TestBackupManyCtrlC(t *testing.T) {
	_, doms, open := fakeMany(t, "a", "b", "c")
	doms["a"].HoldPush(true)
	env, sigs, stderr := signalledEnv(t)
	env.Open = open
	var stdout strings.Builder
	env.Stdout = &stdout
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if st, err := doms["a"].Job(context.Background(), false); err == nil && st.State == virt.JobRunning {
				break
			}
		}
		sigs <- syscall.SIGINT
	}()
	dir := filepath.Join(t.TempDir(), "b")
	code := Main(context.Background(), []string{"vbackup", "backup", "a", "b", "c", "--to", dir, "--push"}, env)
	if code != ExitInterrupted {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, ExitInterrupted, stdout.String(), stderr())
	}
	for _, want := range []string{"a +full +- +\\S+ +interrupted: .*interrupted by SIGINT", "b +- +- +- +not run \\(interrupted before it started\\)", "c +- +- +- +not run"} {
		if !regexp.MustCompile(`(?m)^` + want).MatchString(stdout.String()) {
			t.Errorf("the table lacks %q:\n%s", want, stdout.String())
		}
	}
	if s := stderr(); !strings.Contains(s, "ending the running backups") || !strings.Contains(s, "error: interrupted by SIGINT: 3 of 3 domains not backed up (a, b, c)") {
		t.Errorf("stderr:\n%s", s)
	}
	if cps, _ := doms["a"].Checkpoints(context.Background()); len(cps) != 0 {
		t.Errorf("a keeps checkpoints %v", cps)
	}
}
