package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// needTool finds a program, skipping the test without it (failing with
// CI=true: make test installs it).
func needTool(t *testing.T, name string) string {
	t.Helper()
	testbed.Need(t, name)
	p, _ := exec.LookPath(name)
	return p
}

// systemd-analyze verify says nothing about the units: every key is known
// and every value parses (it only warns, with exit status 0, otherwise).
func TestUnitsVerify(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	dir := t.TempDir()
	for _, f := range []string{"vbackup@.service", "vbackup@.timer"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", filepath.Join(dir, "vbackup@host1.service"), filepath.Join(dir, "vbackup@host1.timer"))
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// execStart is the service's command as systemd runs it: its $$ are the
// shell's $.
func execStart(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("vbackup@.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=/bin/sh -c '(.*)'$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("no ExecStart=/bin/sh -c '...' in vbackup@.service")
	}
	return strings.ReplaceAll(string(m[1]), "$$", "$")
}

// The script backs up every domain, then prunes each domain's folder, also
// after a domain failed; it passes the backup's status on, and prunes
// nothing after an interruption.
func TestServiceScript(t *testing.T) {
	script := execStart(t)
	if !strings.Contains(script, "/usr/local/bin/vbackup") {
		t.Fatalf("the script does not run /usr/local/bin/vbackup (make install rewrites that path): %s", script)
	}
	for _, tc := range []struct {
		name             string
		backupRC, prunRC string
		pruneOpts        string
		wantRC           int
		wantCalls        []string
	}{
		{"all ok", "0", "0", "--keep-daily 7", 0, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*",
			"prune --from DIR/a/ --keep-daily 7", "prune --from DIR/b%2Fc/ --keep-daily 7"}},
		{"a domain failed: prune all the same", "1", "0", "--keep-last 3", 1, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*",
			"prune --from DIR/a/ --keep-last 3", "prune --from DIR/b%2Fc/ --keep-last 3"}},
		{"interrupted: no prune", "130", "0", "--keep-last 3", 130, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*"}},
		{"usage error: no prune", "2", "0", "--keep-last 3", 2, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*"}},
		{"no prune policy", "0", "0", "", 0, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*"}},
		{"a prune failed", "0", "1", "--keep-last 3", 1, []string{
			"-c qemu:///system backup --all --to DIR --parallel 2 --exclude test-*",
			"prune --from DIR/a/ --keep-last 3", "prune --from DIR/b%2Fc/ --keep-last 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			dir := filepath.Join(tmp, "backups")
			for _, d := range []string{"a", "b%2Fc"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			os.WriteFile(filepath.Join(dir, "not-a-folder"), nil, 0o600)
			calls := filepath.Join(tmp, "calls")
			fake := filepath.Join(tmp, "vbackup")
			os.WriteFile(fake, []byte(`#!/bin/sh
echo "$*" >> "$CALLS"
case "$1 $3" in
  "-c backup") exit "$BACKUP_RC" ;;
esac
exit "$PRUNE_RC"
`), 0o755)
			cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "/usr/local/bin/vbackup", fake))
			// A file that --exclude test-* would match as a file name.
			cmd.Dir = tmp
			os.WriteFile(filepath.Join(tmp, "test-x"), nil, 0o600)
			cmd.Env = append(os.Environ(), "CALLS="+calls, "BACKUP_RC="+tc.backupRC, "PRUNE_RC="+tc.prunRC,
				"VBACKUP_URI=qemu:///system", "VBACKUP_DIR="+dir, "VBACKUP_OPTS=--parallel 2 --exclude test-*",
				"VBACKUP_PRUNE_OPTS="+tc.pruneOpts)
			out, err := cmd.CombinedOutput()
			rc := 0
			if ee, ok := err.(*exec.ExitError); ok {
				rc = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if rc != tc.wantRC {
				t.Errorf("exit %d, want %d\n%s", rc, tc.wantRC, out)
			}
			data, _ := os.ReadFile(calls)
			got := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(data), dir, "DIR")), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.wantCalls, "\n") {
				t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantCalls, "\n"))
			}
		})
	}
}
