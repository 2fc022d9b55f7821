package sshhost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/nbd"
)

// fakeHost is a Host whose "ssh" runs the remote command line here, with
// sh, as sshd would run it there: the scripts and their quoting are tested
// without SSH. path, when not "", is the PATH the line runs with.
func fakeHost(t *testing.T, path string) *Host {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fake-ssh")
	env := ""
	if path != "" {
		env = "PATH=" + Quote(path) + " "
	}
	script := "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift 2\nexec env " + env + "sh -c \"$1\"\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Host{Binary: bin, Name: "fakehost"}
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, c := range tools {
		if _, err := exec.LookPath(c); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing", c)
			}
			t.Skipf("%s is missing", c)
		}
	}
}

// image makes a qcow2 image with a bitmap, in a folder whose name needs
// quoting.
func image(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "it's a $dir")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "vda.qcow2")
	for _, args := range [][]string{{"create", "-q", "-f", "qcow2", img, "16M"}, {"bitmap", "--add", "-f", "qcow2", img, "c1"}} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %s: %v: %s", args[0], err, out)
		}
	}
	return img
}

// The socket's folder goes, and the image is free again, once the
// session's stdin closes.
func TestServeImageUntilStdinCloses(t *testing.T) {
	needTools(t, "qemu-img", "qemu-nbd")
	img := image(t)
	h := fakeHost(t, "")
	dom := fmt.Sprintf("vbtest-serve-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := h.ServeImage(ctx, dom, img, "qcow2", "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(filepath.Base(filepath.Dir(s.Socket)), dom+".nbd.") {
		t.Errorf("socket %s is not in a folder of %s", s.Socket, dom)
	}
	if fi, err := os.Stat(filepath.Dir(s.Socket)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the socket's folder: %v, %v; want mode 0700", fi, err)
	}
	uri := nbd.Target{Network: "unix", Address: s.Socket}.String()
	var info nbd.Export
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if info, err = nbd.Info(ctx, uri, nbd.Options{MetaContexts: []string{"qemu:dirty-bitmap:c1"}}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd does not answer on %s: %v (%s)", s.Socket, err, s.Said())
		}
	}
	if info.Size != 16<<20 {
		t.Errorf("export size %d, want 16 MiB", info.Size)
	}
	// Read-only: the image stays open for reading, not writing.
	if out, err := exec.Command("qemu-img", "bitmap", "--add", "-f", "qcow2", img, "c2").CombinedOutput(); err == nil {
		t.Errorf("the image was writable while served: %s", out)
	}
	s.Close()
	select {
	case <-s.Done():
	default:
		t.Error("Close returned before the script exited")
	}
	if _, err := os.Stat(filepath.Dir(s.Socket)); !os.IsNotExist(err) {
		t.Errorf("the socket's folder stayed: %v", err)
	}
	if out, err := exec.Command("qemu-img", "bitmap", "--add", "-f", "qcow2", img, "c2").CombinedOutput(); err != nil {
		t.Errorf("the image is still held after Close: %v: %s", err, out)
	}
}

// An image another process writes: qemu-nbd cannot take its lock, and the
// session ends with qemu-nbd's message, every line of it.
func TestServeImageLocked(t *testing.T) {
	needTools(t, "qemu-img", "qemu-nbd", "qemu-io")
	img := image(t)
	holder := exec.Command("qemu-io", "-f", "qcow2", img)
	said := &lockedBuffer{}
	holder.Stdout, holder.Stderr = said, said
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- holder.Wait() }()
	defer func() { stdin.Close(); <-exited }()
	// Held once qemu-io answers a command: it has opened the image then.
	// (A reader probing meanwhile would take a shared lock that makes
	// qemu-io's open fail, as it did on a loaded machine.)
	if _, err := stdin.Write([]byte("length\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(said.String(), "MiB"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu-io exited (%v) before it held the image: %s", err, said.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-io did not open the image: %s", said.String())
		}
	}
	if exec.Command("qemu-img", "info", img).Run() == nil {
		t.Fatal("qemu-io holds the image, and qemu-img info still opened it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := fakeHost(t, "").ServeImage(ctx, "vbtest-locked", img, "qcow2", "")
	if err == nil {
		select {
		case <-s.Done():
			err = s.Err()
		case <-ctx.Done():
			t.Fatal("qemu-nbd serves an image another process writes")
		}
		if _, serr := os.Stat(filepath.Dir(s.Socket)); !os.IsNotExist(serr) {
			t.Errorf("the socket's folder stayed: %v", serr)
		}
	}
	if err == nil || !strings.Contains(err.Error(), `"write" lock`) || !strings.Contains(err.Error(), "on fakehost") {
		t.Errorf("serving a locked image: %v; want qemu-nbd's lock error, on fakehost", err)
	}
}

// A host without qemu-nbd is told as such, and nothing is made there.
func TestServeImageNoQemuNBD(t *testing.T) {
	bin := t.TempDir()
	needTools(t, "sh", "uname", "env")
	for _, c := range []string{"sh", "uname", "env"} {
		p, _ := exec.LookPath(c)
		if err := os.Symlink(p, filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := fakeHost(t, bin).ServeImage(context.Background(), "vbtest-none", "/x/vda.qcow2", "qcow2", "")
	if err == nil || !strings.Contains(err.Error(), "qemu-nbd is not installed on ") || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("serving on a host without qemu-nbd: %v", err)
	}
}

// A script that neither prints its first line nor exits (a host that
// stops answering) is given up on, and its session closed.
func TestStartGivesUp(t *testing.T) {
	defer func(start, stop time.Duration) { sessionStartWait, sessionStopWait = start, stop }(sessionStartWait, sessionStopWait)
	sessionStartWait, sessionStopWait = 500*time.Millisecond, 500*time.Millisecond
	h := fakeHost(t, "")
	start := time.Now()
	_, err := h.Start(context.Background(), `echo waiting >&2; exec sleep 3600`)
	if err == nil || !strings.Contains(err.Error(), "had not started") || !strings.Contains(err.Error(), "waiting") {
		t.Fatalf("got %v, want the script given up on with what it said", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
}
