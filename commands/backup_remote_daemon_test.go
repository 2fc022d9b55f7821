package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

// These back up domains of a second host (testbed.GetRemote: its own
// network and mount namespaces, reachable over SSH only) from this one, as
// a backup server does: the disks' contents are compared with what is
// read back from the host through SSH, never from a local path.

// remoteOpen opens whatever URI the command line names.
func remoteOpen(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
	c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// wantSaid fails t unless what the user saw (stdout and stderr) holds
// each of parts.
func wantSaid(t *testing.T, r result, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.stdout+r.stderr, p) {
			t.Errorf("output lacks %q:\nstdout:\n%s\nstderr:\n%s", p, r.stdout, r.stderr)
		}
	}
}

// restoreSums restores the backup at (latest when "") of dir and returns
// each disk's raw content SHA-256.
func restoreSums(t *testing.T, dir, at string, disks ...string) map[string]string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored")
	args := []string{"restore", "--from", dir, "--to", out}
	if at != "" {
		args = append(args, "--at", at)
	}
	wantCode(t, vb(t, remoteOpen, args...), ExitOK)
	sums := map[string]string{}
	for _, d := range disks {
		sums[d] = testbed.RawSum(t, filepath.Join(out, d+".qcow2"))
	}
	return sums
}

// remoteSocketGone fails t if the pull job's socket folder of dom stayed
// on the host.
func remoteSocketGone(t *testing.T, host *testbed.Remote, dom string) {
	t.Helper()
	out := host.SSH(t, "ls /tmp/vbackup-$(id -u) 2>/dev/null || true")
	for _, f := range strings.Fields(out) {
		if f == dom {
			t.Errorf("the remote socket folder of %s stayed: %s", dom, out)
		}
	}
}

// noForwardLeft fails t if a forwarded socket's folder stayed here.
func noForwardLeft(t *testing.T, before []string) {
	t.Helper()
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "vbackup-ssh-*"))
	if len(after) > len(before) {
		t.Errorf("forward folders left here: %v (before: %v)", after, before)
	}
}

func TestRemoteBackupFullThenIncremental(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	host.Write(t, dom, "vda", 0x11, 0, 8<<20)
	host.Write(t, dom, "vdb", 0x22, 1<<20, 2<<20)
	dir := filepath.Join(t.TempDir(), dom)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "vbackup-ssh-*"))

	r := vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir, "--quiesce", "no")
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "full (no backup of the domain in this folder yet)", "complete: full")
	want := map[string]string{"vda": host.DiskSum(t, dom, "vda"), "vdb": host.DiskSum(t, dom, "vdb")}
	full := restoreSums(t, dir, "", "vda", "vdb")
	for d := range want {
		if full[d] != want[d] {
			t.Errorf("full backup: restored %s is %s, the remote disk reads %s", d, full[d], want[d])
		}
	}
	// The socket's folder on the host goes with the job.
	remoteSocketGone(t, host, dom)

	host.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
	r = vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir, "--quiesce", "no")
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "complete: incremental", "vda    incremental 512.000 KiB copied")
	want2 := map[string]string{"vda": host.DiskSum(t, dom, "vda"), "vdb": host.DiskSum(t, dom, "vdb")}
	if want2["vda"] == want["vda"] {
		t.Fatal("the write between the backups changed nothing on the remote disk")
	}
	inc := restoreSums(t, dir, "", "vda", "vdb")
	for d := range want2 {
		if inc[d] != want2[d] {
			t.Errorf("incremental backup: restored %s is %s, the remote disk reads %s", d, inc[d], want2[d])
		}
	}
	if cps := host.Checkpoints(t, dom); len(cps) != 1 {
		t.Errorf("remote checkpoints after two backups: %v, want only the newest", cps)
	}
	noForwardLeft(t, before)
}

// The backup side sees nothing of the host but SSH: a backup that read a
// local path would find nothing there.
func TestRemoteHostFilesAreNotLocal(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t)
	src := strings.TrimSpace(host.SSH(t, "virsh -q -c qemu:///session domblklist "+dom+" | awk '{print $2}'"))
	if _, err := os.Stat(src); err == nil {
		t.Fatalf("the remote disk %s is visible here: the host is not separate", src)
	}
	if strings.TrimSpace(host.SSH(t, "test -e "+src+" && echo yes")) != "yes" {
		t.Fatalf("the remote disk %s is not on the host either", src)
	}
}

func TestRemoteBeginFetchAndEnd(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t)
	host.Write(t, dom, "vda", 0x5a, 2<<20, 1<<20)
	c := host.URI()

	// backup-begin --pull --fetch: begin, read through SSH, end.
	d1 := filepath.Join(t.TempDir(), "f1")
	r := vb(t, remoteOpen, "-c", c, "backup-begin", dom, "--pull", "--checkpoint", "c1", "--fetch", d1, "--format", "qcow2", "--quiesce", "no")
	wantCode(t, r, ExitOK)
	want := host.DiskSum(t, dom, "vda")
	if got := testbed.RawSum(t, filepath.Join(d1, "vda.qcow2")); got != want {
		t.Errorf("backup-begin --fetch read %s, the remote disk reads %s", got, want)
	}

	// backup-begin --pull, backup-status, backup-fetch of the incremental,
	// backup-end.
	host.Write(t, dom, "vda", 0x6b, 6<<20, 256<<10)
	wantCode(t, vb(t, remoteOpen, "-c", c, "backup-begin", dom, "--pull", "--incremental", "c1", "--checkpoint", "c2", "--quiesce", "no"), ExitOK)
	r = vb(t, remoteOpen, "-c", c, "backup-status", dom)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout+r.stderr, "pull") {
		t.Errorf("backup-status does not tell the pull job:\n%s%s", r.stdout, r.stderr)
	}
	d2 := filepath.Join(t.TempDir(), "f2")
	r = vb(t, remoteOpen, "-c", c, "backup-fetch", dom, "--to", d2, "--backing", d1)
	wantCode(t, r, ExitOK)
	wantCode(t, vb(t, remoteOpen, "-c", c, "backup-end", dom), ExitOK)
	want = host.DiskSum(t, dom, "vda")
	if got := testbed.RawSum(t, filepath.Join(d2, "vda.qcow2")); got != want {
		t.Errorf("backup-fetch of the incremental over the full reads %s, the remote disk reads %s", got, want)
	}
	remoteSocketGone(t, host, dom)
}

// What SSH refuses is told with what to do, exits 1 and changes nothing:
// no folder here, no checkpoint there.
func TestRemoteSSHRefusals(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t)
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stranger := filepath.Join(t.TempDir(), "id_stranger")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	wrapper := "command=" + host.SSHCommand()
	for _, tc := range []struct {
		name, uri string
		want      []string
	}{
		{"unknown host key", host.URIWith("command=" + host.SSHWrapper(t, empty) + "&keyfile=" + host.KeyFile()),
			[]string{"the host key of " + host.Addr() + " is not in known_hosts", "ssh-keyscan " + host.Addr()}},
		{"no such key", host.URIWith(wrapper + "&keyfile=/nonexistent/id_ed25519"),
			[]string{"keyfile=/nonexistent/id_ed25519: no such file or directory", "name the private key"}},
		{"key not accepted", host.URIWith(wrapper + "&keyfile=" + stranger),
			[]string{host.Addr() + " accepted none of the keys offered", "authorized_keys of vbremote"}},
		{"unreachable", fmt.Sprintf("qemu+ssh://vbremote@%s:2/session?%s&keyfile=%s", host.Addr(), wrapper, host.KeyFile()),
			[]string{"cannot reach " + host.Addr(), "that sshd runs there"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			r := vb(t, remoteOpen, "-c", tc.uri, "backup", dom, "--to", dir)
			wantCode(t, r, ExitFailure)
			wantStderr(t, r, tc.want...)
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("%s was made by a refused backup", dir)
			}
			if cps := host.Checkpoints(t, dom); len(cps) != 0 {
				t.Errorf("a refused backup left checkpoints %v", cps)
			}
		})
	}
}

func TestRemoteRefusesWhatItCannotDo(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t)
	c := host.URI()

	// A unix socket path names a file here; libvirtd is there.
	r := vb(t, remoteOpen, "-c", c, "backup-begin", dom, "--pull", "--server", "unix:/tmp/x.sock")
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, "--server unix:/tmp/x.sock names a path on this host, and libvirtd runs on "+host.Addr(), "--server tcp:HOST:PORT --tls")

	dir := filepath.Join(t.TempDir(), "b")
	r = vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir, "--push")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--push: libvirtd runs on "+host.Addr(), "leave out --push")
	// (A shut-off domain is backed up: backup_remote_offline_daemon_test.go.)
}
