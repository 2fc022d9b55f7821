package commands

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// A shut-off domain of the second host is backed up from this one: its
// images are read on the host with qemu-img and qemu-nbd, through the
// same SSH access as libvirt, and the disks' contents are compared with
// what is read back from the host through SSH.

// remoteOfflineGone fails t if a qemu-nbd of dom, or the folder of its
// socket, stayed on the host.
func remoteOfflineGone(t *testing.T, host *testbed.Remote, dom string) {
	t.Helper()
	// [q]: the pattern does not match the shell that runs pgrep.
	if out := host.SSH(t, "pgrep -a -u vbremote -f '[q]emu-nbd.*/"+dom+"[.]nbd[.]' || true"); strings.TrimSpace(out) != "" {
		t.Errorf("qemu-nbd stayed on the host: %s", out)
	}
	if out := host.SSH(t, "ls -A /tmp/vbackup-$(id -u) 2>/dev/null || true"); holdsFolderOf(out, dom) {
		t.Errorf("a socket folder of %s stayed on the host: %s", dom, out)
	}
	remoteSocketGone(t, host, dom)
}

// holdsFolderOf reports whether a listing of the socket folders holds
// one of dom's: its pull folder DOM or a served image's DOM.nbd.XXXXXX
// (not another domain's whose name starts with dom's).
func holdsFolderOf(listing, dom string) bool {
	for _, l := range strings.Fields(listing) {
		if l == dom || strings.HasPrefix(l, dom+".nbd.") {
			return true
		}
	}
	return false
}

// remoteSums is ImageSum of each disk.
func remoteSums(t *testing.T, host *testbed.Remote, dom string, disks ...string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, d := range disks {
		sums[d] = host.ImageSum(t, dom, d)
	}
	return sums
}

func TestRemoteShutOffFullThenIncremental(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	host.Write(t, dom, "vda", 0x11, 0, 8<<20)
	host.Write(t, dom, "vdb", 0x22, 1<<20, 2<<20)
	host.Stop(t, dom)
	c := host.URI()
	dir := filepath.Join(t.TempDir(), dom)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "vbackup-ssh-*"))

	// A dry run asks the host, and changes nothing there.
	r := vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "would be read with qemu-nbd on "+host.Addr())
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the dry run made %s", dir)
	}
	if got := host.Bitmaps(t, dom, "vda"); len(got) != 0 {
		t.Errorf("the dry run left bitmaps %v on the host", got)
	}

	r = vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "is shut off: reading its images with qemu-nbd on "+host.Addr(), "complete: full")
	b1 := storeBackups(t, dir)[0]
	want1 := remoteSums(t, host, dom, "vda", "vdb")
	remoteOfflineGone(t, host, dom)
	if got := host.Bitmaps(t, dom, "vda"); !slices.Equal(got, []string{b1.Name()}) {
		t.Errorf("vda's bitmaps on the host after the full backup: %v, want %s", got, b1.Name())
	}
	if got := host.Checkpoints(t, dom); !slices.Equal(got, []string{b1.Name()}) {
		t.Errorf("the host's checkpoints after the full backup: %v, want %s", got, b1.Name())
	}
	if b1.Mode != "offline" {
		t.Errorf("the full backup's mode: %q, want offline", b1.Mode)
	}

	host.WriteImage(t, dom, "vda", 0xcd, 4<<20, 512<<10)
	r = vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "would be incremental (changes since backup "+b1.Name()+")")
	if got := host.Bitmaps(t, dom, "vda"); !slices.Equal(got, []string{b1.Name()}) {
		t.Errorf("vda's bitmaps on the host after a dry run: %v, want %s alone", got, b1.Name())
	}

	r = vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantSaid(t, r, "complete: incremental", "vda    incremental 512.000 KiB copied")
	b2 := storeBackups(t, dir)[1]
	want2 := remoteSums(t, host, dom, "vda", "vdb")
	if want2["vda"] == want1["vda"] {
		t.Fatal("the write between the backups changed nothing on the remote image")
	}
	remoteOfflineGone(t, host, dom)
	if got := host.Bitmaps(t, dom, "vda"); !slices.Equal(got, []string{b2.Name()}) {
		t.Errorf("vda's bitmaps on the host after the incremental: %v, want %s", got, b2.Name())
	}
	if got := host.Checkpoints(t, dom); !slices.Equal(got, []string{b2.Name()}) {
		t.Errorf("the host's checkpoints after the incremental: %v, want %s", got, b2.Name())
	}

	wantCode(t, vb(t, remoteOpen, "verify", "--from", dir), ExitOK)
	for at, want := range map[string]map[string]string{b1.Name(): want1, b2.Name(): want2} {
		got := restoreSums(t, dir, at, "vda", "vdb")
		for d := range want {
			if got[d] != want[d] {
				t.Errorf("restored at %s: %s is %s, the remote image read %s", at, d, got[d], want[d])
			}
		}
	}
	// Nothing holds the images: the domain starts.
	host.SSH(t, "virsh -q -c qemu:///session start "+dom+" >/dev/null")
	noForwardLeft(t, before)
}

// An image another process on the host holds open for writing is
// refused, saying so and where, and nothing changes.
func TestRemoteShutOffImageHeld(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t)
	host.Stop(t, dom)
	image := host.Image(t, dom, "vda")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	holder := exec.CommandContext(ctx, host.SSHCommand(), "-i", host.KeyFile(), "-T", host.User()+"@"+host.Addr(), "qemu-io -f qcow2 "+image)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); holder.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(host.SSH(t, "qemu-img info "+image+" >/dev/null 2>&1 || echo held"), "held"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("qemu-io did not take the remote image's lock within 30 s")
		}
	}
	dir := filepath.Join(t.TempDir(), "b")
	r := vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "disk vda: "+image+" on "+host.Addr()+" is open for writing by another process", `"write" lock`)
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s was made by a refused backup", dir)
	}
	stdin.Close()
	holder.Wait()
	if got := host.Bitmaps(t, dom, "vda"); len(got) != 0 {
		t.Errorf("a refused backup left bitmaps %v", got)
	}
	remoteOfflineGone(t, host, dom)
}

// vbackup killed outright (SIGKILL) while it reads a remote shut-off
// domain's images: its ssh dies with it, and on the host qemu-nbd stops
// and its socket folder goes as the session's stdin closes. The domain
// then starts, and the next backup builds on the last complete one.
func TestRemoteShutOffKilled(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t, "vda:qcow2:512M")
	host.Write(t, dom, "vda", 0x11, 0, 4<<20)
	host.Stop(t, dom)
	c := host.URI()
	dir := filepath.Join(t.TempDir(), dom)
	wantCode(t, vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()
	host.WriteImage(t, dom, "vda", 0x22, 64<<20, 384<<20)

	// --bwlimit: 384 MiB take some 6 s, so the kill lands half-way on a
	// machine of any speed.
	run := startJSON(t, "-c", c, "backup", dom, "--to", dir, "--json", "--bwlimit", "64M")
	stderr := &run.stderr
	killed := run.midway(0) && run.cmd.Process.Signal(syscall.SIGKILL) == nil
	err := run.wait()
	if !killed {
		t.Fatalf("the backup ended before it could be killed half-way (%v):\n%s", err, stderr.String())
	}
	// The host sees the connection close; give it a moment.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := host.SSH(t, "pgrep -a -u vbremote -f '[q]emu-nbd.*/"+dom+"[.]nbd[.]'; ls -A /tmp/vbackup-$(id -u) 2>/dev/null; true")
		if !holdsFolderOf(out, dom) && !strings.Contains(out, "/"+dom+".nbd.") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after vbackup was killed, the host still has: %s", out)
		}
	}
	host.SSH(t, "virsh -q -c qemu:///session start "+dom+" >/dev/null && virsh -q -c qemu:///session destroy "+dom+" >/dev/null")
	if got := host.Checkpoints(t, dom); !slices.Equal(got, []string{first}) {
		t.Errorf("checkpoints after the killed backup: %v, want only %s", got, first)
	}
	r := vb(t, remoteOpen, "-c", c, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "removed the unfinished backup")
	if got := backupLevels(t, dir); len(got) != 2 || got[1] != "incremental: vda=incremental" {
		t.Errorf("the backup after the killed one: %v", got)
	}
	want := host.ImageSum(t, dom, "vda")
	if got := restoreSums(t, dir, "", "vda"); got["vda"] != want {
		t.Errorf("restored %s, the remote image reads %s", got["vda"], want)
	}
}

// remoteTry runs a shell command line on the host and returns its
// combined output and error, for what is meant to fail.
func remoteTry(host *testbed.Remote, line string) (string, error) {
	out, err := exec.Command(host.SSHCommand(), "-i", host.KeyFile(), "-T", host.User()+"@"+host.Addr(), line).CombinedOutput()
	return string(out), err
}

// A remote shut-off domain cannot start while its images are read there:
// qemu-nbd holds QEMU's image lock until the backup is in place.
func TestRemoteShutOffStartRefused(t *testing.T) {
	host := testbed.GetRemote(t)
	dom := host.Domain(t, "vda:qcow2:512M")
	host.Stop(t, dom)
	host.WriteImage(t, dom, "vda", 0x11, 0, 256<<20)
	dir := filepath.Join(t.TempDir(), dom)
	// --bwlimit: 256 MiB take some 8 s, time enough to try a start once
	// data flows (qemu-nbd has the image open, and QEMU's lock, by then).
	run := startJSON(t, "-c", host.URI(), "backup", dom, "--to", dir, "--json", "--bwlimit", "32M")
	if !run.midway(1) {
		_ = run.wait()
		t.Fatalf("the backup ended before data flowed:\n%s", run.stderr.String())
	}
	out, err := remoteTry(host, "virsh -q -c qemu:///session start "+dom)
	if err == nil {
		t.Errorf("virsh start on the host while the backup reads the images worked: %s", out)
	} else if !strings.Contains(out, `Failed to get "write" lock`) {
		// libvirt may say only that QEMU closed its monitor; QEMU's own
		// log then says why.
		if qlog := host.SSH(t, "cat ~/.cache/libvirt/qemu/log/"+dom+".log 2>/dev/null || true"); !strings.Contains(qlog, `Failed to get "write" lock`) {
			t.Errorf("virsh start on the host while the backup reads the images: %v: %s; want QEMU's lock error (QEMU's log:\n%s)", err, out, qlog)
		}
	}
	if err := run.wait(); err != nil {
		t.Fatalf("the backup failed (%v):\n%s", err, run.stderr.String())
	}
	want := host.ImageSum(t, dom, "vda")
	if got := restoreSums(t, dir, "", "vda"); got["vda"] != want {
		t.Errorf("restored %s, the remote image reads %s", got["vda"], want)
	}
	remoteOfflineGone(t, host, dom)
	host.SSH(t, "virsh -q -c qemu:///session start "+dom+" >/dev/null")
}
