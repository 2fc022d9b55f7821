package commands

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// These back up domains of the second host's system daemon
// (testbed.Remote.System: root's libvirtd there, its QEMU running as
// libvirt-qemu) over qemu+ssh://USER@HOST/system, as root and as vbremote,
// a member of its socket's group: the user QEMU runs as is neither. What
// the disks hold is read back on the host through SSH.

// systemLogin is one way into the system daemon: its URI and SSH user.
type systemLogin struct{ name, uri, user string }

func systemLogins(sys *testbed.Remote, host *testbed.Remote) []systemLogin {
	return []systemLogin{
		{"root", sys.URI(), "root"},
		{"group member", host.MemberURI(), host.MemberUser()},
	}
}

// systemDomain makes a domain on the system daemon and fails t unless its
// QEMU runs as libvirt-qemu, the case these tests are about.
func systemDomain(t *testing.T, sys *testbed.Remote, disks ...string) string {
	t.Helper()
	dom := sys.Domain(t, disks...)
	if u := strings.TrimSpace(sys.SSH(t, "stat -c %U /proc/$(cat /run/libvirt/qemu/"+dom+".pid)")); u != "libvirt-qemu" {
		t.Fatalf("QEMU of %s runs as %q on the remote host, not libvirt-qemu", dom, u)
	}
	return dom
}

// systemSocketGone fails t if the pull job's socket folder of dom stayed
// on the host (root's under /run/vbackup, another user's under
// /tmp/vbackup-UID) or was ever made here.
func systemSocketGone(t *testing.T, sys *testbed.Remote, user, dom string) {
	t.Helper()
	base := "/run/vbackup"
	if user != "root" {
		base = "/tmp/vbackup-$(id -u " + user + ")"
	}
	if out := sys.SSH(t, "ls -d "+base+"/"+dom+" 2>/dev/null || true"); strings.TrimSpace(out) != "" {
		t.Errorf("the remote socket folder of %s stayed: %s", dom, out)
	}
	if _, err := os.Stat(filepath.Join("/run/vbackup", dom)); err == nil {
		t.Errorf("a socket folder of the remote domain %s was made here", dom)
	}
}

// socketPrivate fails t unless the pull job's socket that backup-begin
// printed lets no one connect on the host but its owner (QEMU's user) and
// its group (the SSH user's, or QEMU's own for root).
func socketPrivate(t *testing.T, sys *testbed.Remote, begun string) {
	t.Helper()
	_, sock, ok := strings.Cut(begun, "?socket=")
	if !ok {
		t.Fatalf("backup-begin printed no socket:\n%s", begun)
	}
	sock = strings.Fields(sock)[0]
	mode := strings.TrimSpace(sys.SSH(t, "stat -c %a "+sock))
	if mode == "" || (mode[len(mode)-1]-'0')&2 != 0 {
		t.Errorf("the remote socket %s has mode %s: anyone on the host can connect to it", sock, mode)
	}
}

func TestRemoteSystemBackupFullThenIncremental(t *testing.T) {
	host := testbed.GetRemote(t)
	sys := host.System()
	for _, login := range systemLogins(sys, host) {
		t.Run(login.name, func(t *testing.T) {
			dom := systemDomain(t, sys, "vda:qcow2:64M", "vdb:qcow2:32M")
			sys.Write(t, dom, "vda", 0x11, 0, 8<<20)
			sys.Write(t, dom, "vdb", 0x22, 1<<20, 2<<20)
			dir := filepath.Join(t.TempDir(), dom)
			before, _ := filepath.Glob(filepath.Join(os.TempDir(), "vbackup-ssh-*"))

			r := vb(t, remoteOpen, "-c", login.uri, "backup", dom, "--to", dir, "--quiesce", "no")
			wantCode(t, r, ExitOK)
			wantSaid(t, r, "full (no backup of the domain in this folder yet)", "complete: full")
			want := map[string]string{"vda": sys.DiskSum(t, dom, "vda"), "vdb": sys.DiskSum(t, dom, "vdb")}
			full := restoreSums(t, dir, "", "vda", "vdb")
			for d := range want {
				if full[d] != want[d] {
					t.Errorf("full backup: restored %s is %s, the remote disk reads %s", d, full[d], want[d])
				}
			}
			systemSocketGone(t, sys, login.user, dom)

			sys.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
			r = vb(t, remoteOpen, "-c", login.uri, "backup", dom, "--to", dir, "--quiesce", "no")
			wantCode(t, r, ExitOK)
			wantSaid(t, r, "complete: incremental", "vda    incremental 512.000 KiB copied")
			want2 := map[string]string{"vda": sys.DiskSum(t, dom, "vda"), "vdb": sys.DiskSum(t, dom, "vdb")}
			if want2["vda"] == want["vda"] {
				t.Fatal("the write between the backups changed nothing on the remote disk")
			}
			inc := restoreSums(t, dir, "", "vda", "vdb")
			for d := range want2 {
				if inc[d] != want2[d] {
					t.Errorf("incremental backup: restored %s is %s, the remote disk reads %s", d, inc[d], want2[d])
				}
			}
			// The full is still restorable from the chain as it was.
			bs := storeBackups(t, dir)
			if len(bs) != 2 {
				t.Fatalf("%d backups in %s, want a full and an incremental", len(bs), dir)
			}
			first := restoreSums(t, dir, bs[0].Name(), "vda", "vdb")
			for d := range want {
				if first[d] != want[d] {
					t.Errorf("restore --at the full: %s is %s, the remote disk read %s then", d, first[d], want[d])
				}
			}
			if cps := sys.Checkpoints(t, dom); len(cps) != 1 {
				t.Errorf("remote checkpoints after two backups: %v, want only the newest", cps)
			}
			systemSocketGone(t, sys, login.user, dom)
			noForwardLeft(t, before)
		})
	}
}

// backup-status and checkpoint-list speak to the system daemon over the
// same URI, and a pull job begun and ended there leaves no socket folder.
func TestRemoteSystemStatusAndCheckpoints(t *testing.T) {
	host := testbed.GetRemote(t)
	sys := host.System()
	for _, login := range systemLogins(sys, host) {
		t.Run(login.name, func(t *testing.T) {
			c := login.uri
			dom := systemDomain(t, sys)
			sys.Write(t, dom, "vda", 0x5a, 2<<20, 1<<20)
			dir := filepath.Join(t.TempDir(), dom)
			wantCode(t, vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir, "--quiesce", "no"), ExitOK)
			cps := sys.Checkpoints(t, dom)
			if len(cps) != 1 {
				t.Fatalf("remote checkpoints after a backup: %v, want one", cps)
			}
			r := vb(t, remoteOpen, "-c", c, "checkpoint-list", dom)
			wantCode(t, r, ExitOK)
			if !strings.Contains(r.stdout, cps[0]) {
				t.Errorf("checkpoint-list lacks the remote checkpoint %s:\n%s", cps[0], r.stdout)
			}

			r = vb(t, remoteOpen, "-c", c, "backup-status", dom)
			wantCode(t, r, ExitOK)
			if strings.Contains(r.stdout+r.stderr, "pull") {
				t.Errorf("backup-status tells a pull job where none runs:\n%s%s", r.stdout, r.stderr)
			}

			r = vb(t, remoteOpen, "-c", c, "backup-begin", dom, "--pull", "--incremental", cps[0], "--checkpoint", "c2", "--quiesce", "no")
			wantCode(t, r, ExitOK)
			socketPrivate(t, sys, r.stdout)
			r = vb(t, remoteOpen, "-c", c, "backup-status", dom)
			wantCode(t, r, ExitOK)
			if !strings.Contains(r.stdout+r.stderr, "pull") {
				t.Errorf("backup-status does not tell the pull job:\n%s%s", r.stdout, r.stderr)
			}
			wantCode(t, vb(t, remoteOpen, "-c", c, "backup-end", dom), ExitOK)

			r = vb(t, remoteOpen, "-c", c, "checkpoint-list", dom)
			wantCode(t, r, ExitOK)
			for _, cp := range []string{cps[0], "c2"} {
				if !strings.Contains(r.stdout, cp) {
					t.Errorf("checkpoint-list lacks %s after the pull job:\n%s", cp, r.stdout)
				}
			}
			systemSocketGone(t, sys, login.user, dom)
		})
	}
}
