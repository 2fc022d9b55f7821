package sshhost

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"vbackup/internal/testbed"
)

// nobody is the user the socket folder scripts run as here: an SSH user
// of the hypervisor that is not root.
const nobody = 65534

// runAs runs script with sh as nobody, with XDG_RUNTIME_DIR xdg, and
// returns what it printed.
func runAs(t *testing.T, xdg, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", script, "vbackup"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR=" + xdg}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the script as uid %d: %v\n%s", nobody, err, out)
	}
	return strings.TrimSpace(string(out))
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSticky)
}

// A user that is not root backs up a domain whose QEMU runs as another
// user (a system daemon's): the socket folder must be one QEMU can reach,
// not in XDG_RUNTIME_DIR (its owner's alone, as pam_systemd makes it),
// and it is made private again when the next domain's QEMU is the user's
// own. Removal finds it in either place.
func TestSocketDirForAnotherUsersQEMU(t *testing.T) {
	testbed.NeedRoot(t, "running the scripts as another user")
	xdg, err := os.MkdirTemp("/tmp", "vbxdg.")
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join("/tmp", "vbackup-65534")
	t.Cleanup(func() { os.RemoveAll(xdg); os.RemoveAll(shared) })
	os.RemoveAll(shared)
	if err := os.Chown(xdg, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(xdg, 0o700); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(xdg, "theirs.qcow2") // root's: QEMU's user
	mine := filepath.Join(xdg, "mine.qcow2")
	for _, f := range []string{theirs, mine} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(mine, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	dir := runAs(t, xdg, socketDirScript, "web", "nbd.sock", theirs)
	if want := filepath.Join(shared, "web"); dir != want {
		t.Fatalf("QEMU as another user: socket folder %s, want %s (QEMU cannot enter %s)", dir, want, xdg)
	}
	if m := modeOf(t, shared); m != 0o711 {
		t.Errorf("%s has mode %v, want 0711: QEMU must pass through, no one list it", shared, m)
	}
	if m := modeOf(t, dir); m != 0o773|os.ModeSetgid|os.ModeSticky {
		t.Errorf("%s has mode %v, want 3773", dir, m)
	}

	// The same domain later with the user's own QEMU: private again.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	again := runAs(t, "", socketDirScript, "web", "nbd.sock", theirs)
	if err := os.Chmod(again, 0o3773); err != nil { // as a run before left it
		t.Fatal(err)
	}
	private := runAs(t, "", socketDirScript, "web", "nbd.sock", mine)
	if private != again {
		t.Fatalf("without XDG_RUNTIME_DIR the folder is %s, then %s", again, private)
	}
	if m := modeOf(t, private); m != 0o700 {
		t.Errorf("a folder a shared run left has mode %v after a private run, want 0700", m)
	}
	own := runAs(t, xdg, socketDirScript, "db", "nbd.sock", mine)
	if want := filepath.Join(xdg, "vbackup", "db"); own != want {
		t.Errorf("QEMU as the user: socket folder %s, want %s", own, want)
	}

	runAs(t, xdg, removeScript, "web", "nbd.sock", "")
	runAs(t, xdg, removeScript, "db", "nbd.sock", "")
	for _, d := range []string{private, own} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is left after the remove script (%v)", d, err)
		}
	}
}
