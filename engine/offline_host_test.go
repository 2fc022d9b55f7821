package engine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vbackup/sshhost"
)

// fakeRemote is remoteImages whose "ssh" runs the remote command line
// here with sh, as sshd would there: the scripts and the quoting of their
// arguments are tested without SSH. path, when not "", is the PATH they
// run with.
func fakeRemote(t *testing.T, path string) remoteImages {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fake-ssh")
	env := ""
	if path != "" {
		env = "PATH=" + sshhost.Quote(path) + " "
	}
	script := "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift 2\nexec env " + env + "sh -c \"$1\"\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return remoteImages{host: &sshhost.Host{Binary: bin, Name: "fakehost"}, domain: "vm1"}
}

// qemu-img's arguments arrive as they were (a path that needs quoting),
// and its two-line lock error is still told as a lock.
func TestRemoteImagesQemuImg(t *testing.T) {
	lookTool(t, "qemu-img")
	lookTool(t, "qemu-io")
	ctx := context.Background()
	r := fakeRemote(t, "")
	dir := filepath.Join(t.TempDir(), "it's a $dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "vda.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if err := addBitmap(ctx, r, img, "c 1"); err != nil {
		t.Fatal(err)
	}
	bitmaps, err := imageInfo(ctx, r, img, "qcow2")
	if err != nil || len(bitmaps) != 1 || bitmaps[0].Name != "c 1" || bitmaps[0].usableFor() != "" {
		t.Fatalf("imageInfo = %+v, %v; want one usable bitmap 'c 1'", bitmaps, err)
	}

	holder := exec.Command("qemu-io", "-f", "qcow2", img)
	said := &syncBuffer{}
	holder.Stdout, holder.Stderr = said, said
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); holder.Wait() }()
	// qemu-io holds the image once it answers a command; a reader probing
	// before would take a shared lock that makes qemu-io's open fail.
	if _, err := stdin.Write([]byte("length\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(said.String(), "MiB"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || strings.Contains(said.String(), "lock") {
			t.Fatalf("qemu-io did not open the image: %s", said.String())
		}
	}
	_, err = imageInfo(ctx, r, img, "qcow2")
	if err == nil || !strings.Contains(err.Error(), img+" on fakehost is open for writing by another process") {
		t.Errorf("imageInfo of an image held for writing: %v", err)
	}
	stdin.Close()
	holder.Wait()
	if err := removeBitmap(ctx, r, img, "c 1"); err != nil {
		t.Fatal(err)
	}
	if err := removeBitmap(ctx, r, img, "c 1"); err == nil || !strings.Contains(err.Error(), "qemu-img bitmap "+img+": on fakehost:") {
		t.Errorf("removing a bitmap that is not there: %v; want qemu-img's error naming the image and the host", err)
	}
}

// A host without QEMU's tools is refused before anything changes.
func TestRemoteImagesCheck(t *testing.T) {
	bin := t.TempDir()
	for _, c := range []string{"sh", "env"} {
		if err := os.Symlink(lookTool(t, c), filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	err := fakeRemote(t, bin).check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "qemu-img and qemu-nbd are not installed on fakehost, which holds the images") {
		t.Errorf("check on a host without qemu-img: %v", err)
	}
	if err := os.Symlink(lookTool(t, "qemu-img"), filepath.Join(bin, "qemu-img")); err != nil {
		t.Fatal(err)
	}
	err = fakeRemote(t, bin).check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "qemu-nbd is not installed on fakehost") || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("check on a host without qemu-nbd: %v", err)
	}
	if err := fakeRemote(t, "").check(context.Background()); err != nil {
		if _, lerr := exec.LookPath("qemu-nbd"); lerr == nil {
			t.Errorf("check on a host with both: %v", err)
		}
	}
}

// An SSH user who may not read a shut-off domain's images (a system
// daemon's, root's) is told who reads them and what would do.
func TestRemoteImagesPermissionDenied(t *testing.T) {
	if os.Getuid() != 0 {
		unavailable(t, "needs root, to run qemu-img as another user")
	}
	r := fakeRemote(t, "")
	// The fake ssh logs in as nobody.
	script, err := os.ReadFile(r.host.Binary)
	if err != nil {
		t.Fatal(err)
	}
	script = []byte(strings.Replace(string(script), "exec env ", "exec setpriv --reuid=65534 --regid=65534 --clear-groups env ", 1))
	if err := os.WriteFile(r.host.Binary, script, 0o755); err != nil {
		t.Fatal(err)
	}
	r.host.User = "backup"
	dir, err := os.MkdirTemp("/tmp", "vbperm.")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "vda.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if err := os.Chmod(img, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = imageInfo(context.Background(), r, img, "qcow2")
	if err == nil || !strings.Contains(err.Error(), "by the SSH user (backup@fakehost)") || !strings.Contains(err.Error(), "qemu+ssh://root@fakehost/system") {
		t.Errorf("imageInfo of an image the SSH user may not read: %v", err)
	}
}

// syncBuffer is a strings.Builder that a process's output copier and the
// test share.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lookTool is the path of a program the test runs; without it the test
// skips, or fails when CI=true (make test installs every one).
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		unavailable(t, name+" is missing (scripts/install-deps.sh installs it)")
	}
	return p
}

// unavailable skips t for why, or fails it when CI=true: CI never skips.
// (engine's tests build without cgo, so without internal/testbed.)
func unavailable(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true forbids skipping)", why)
	}
	t.Skip(why)
}
