package qsd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

func need(t *testing.T, bins ...string) {
	t.Helper()
	testbed.Need(t, bins...)
	testbed.NeedRoot(t, "a FUSE export")
}

// chain makes a base image with 0xaa at 1 MiB and an overlay over it
// with 0xbb at 2 MiB, and returns the overlay.
func chain(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "8M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 1M 64k", base},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0xbb 2M 64k", top},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return top
}

func sum(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The FUSE export reads as the chain; writes land in the overlay, never
// in the chain's images; Stop leaves no daemon and no FUSE mount.
func TestFuseOverlay(t *testing.T) {
	need(t, Binary, "qemu-img", "qemu-io")
	top := chain(t)
	base := filepath.Join(filepath.Dir(top), "base.qcow2")
	before := [][]byte{sum(t, top), sum(t, base)}
	dir := t.TempDir()
	overlay := filepath.Join(dir, "overlay.qcow2")
	if err := CreateOverlay(context.Background(), overlay, 8<<20); err != nil {
		t.Fatal(err)
	}
	f, err := StartFuse(context.Background(), FuseRequest{Image: Image{Path: top, Format: "qcow2"}, Overlay: overlay,
		File: filepath.Join(dir, "disk"), PIDFile: filepath.Join(dir, "pid"), LogFile: filepath.Join(dir, "log")})
	if err != nil {
		t.Fatal(err)
	}
	if !Running(f.PID) {
		t.Fatalf("pid %d is not a running %s", f.PID, Binary)
	}
	disk, err := os.OpenFile(f.File, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8<<20)
	if _, err := disk.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[1<<20:1<<20+65536], bytes.Repeat([]byte{0xaa}, 65536)) || !bytes.Equal(got[2<<20:2<<20+65536], bytes.Repeat([]byte{0xbb}, 65536)) || got[0] != 0 {
		t.Errorf("the export does not read as the chain")
	}
	if _, err := disk.WriteAt([]byte("replayed journal"), 1<<20); err != nil {
		t.Fatal(err)
	}
	disk.Close()
	if err := Stop(f.PID); err != nil {
		t.Fatal(err)
	}
	if Running(f.PID) {
		t.Errorf("the daemon still runs after Stop")
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), f.File) {
		t.Errorf("the FUSE export is still mounted on %s", f.File)
	}
	if !bytes.Equal(sum(t, top), before[0]) || !bytes.Equal(sum(t, base), before[1]) {
		t.Errorf("a write through the export changed the chain's images")
	}
	// The overlay names no backing file: read alone, it holds the write.
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x72 1M 1", overlay).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") {
		t.Errorf("the write did not land in the overlay: %v\n%s", err, out)
	}
}

// An NBD server over a unix socket serves the chain under its name,
// read-only.
func TestNBD(t *testing.T) {
	need(t, Binary, "qemu-img", "qemu-io")
	top := chain(t)
	sock := filepath.Join(t.TempDir(), "s")
	s, err := StartNBD(context.Background(), NBDRequest{Exports: []Export{{Name: "vda", Image: Image{Path: top, Format: "qcow2"}}}, Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	uri := "nbd+unix:///vda?socket=" + sock
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", top, uri).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare: %v\n%s", err, out)
	}
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", uri).CombinedOutput(); err == nil && !strings.Contains(string(out), "denied") && !strings.Contains(string(out), "read-only") {
		t.Errorf("a write to the export was taken:\n%s", out)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Exited():
	default:
		t.Errorf("Stop returned with the server running")
	}
	if _, err := StartNBD(context.Background(), NBDRequest{Exports: []Export{{Name: "a,b", Image: Image{Path: top, Format: "qcow2"}}}, Socket: sock}); err == nil {
		t.Errorf("an export name with a comma was given to the daemon")
	}
}

// slowParent puts first on PATH a qemu-storage-daemon that runs the real
// one and, once that has daemonized (its parent returned: the daemon
// runs, its pid file is written), touches forked and waits for release
// before it exits: the moment of a Ctrl-C after the fork, before
// StartFuse returns.
func slowParent(t *testing.T) (forked, release string) {
	t.Helper()
	real, err := exec.LookPath(Binary)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	forked, release = filepath.Join(bin, "forked"), filepath.Join(bin, "release")
	script := fmt.Sprintf("#!/bin/sh\n%s \"$@\"\nrc=$?\ntouch %s\ni=0\nwhile [ ! -e %s ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nexit $rc\n", real, forked, release)
	if err := os.WriteFile(filepath.Join(bin, Binary), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	return forked, release
}

// fuseFixture is a FuseRequest over a chain in a fresh folder, the
// daemon inheriting a shared flock on lock, as a mount's does the
// folder's; whatever daemon a failing test leaves is stopped.
func fuseFixture(t *testing.T) (req FuseRequest, lock string) {
	t.Helper()
	top := chain(t)
	dir := t.TempDir()
	req = FuseRequest{Image: Image{Path: top, Format: "qcow2"}, Overlay: filepath.Join(dir, "overlay.qcow2"),
		File: filepath.Join(dir, "disk"), PIDFile: filepath.Join(dir, "pid"), LogFile: filepath.Join(dir, "log")}
	if err := CreateOverlay(context.Background(), req.Overlay, 8<<20); err != nil {
		t.Fatal(err)
	}
	lock = filepath.Join(dir, "lock")
	f, err := os.Create(lock)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	req.Inherit = []*os.File{f}
	t.Cleanup(func() {
		f.Close()
		StopPIDFile(req.PIDFile)
		exec.Command("umount", "--lazy", req.File).Run()
	})
	return req, lock
}

// wantNothingLeft fails t if a daemon of req runs, its export is mounted,
// or the lock it inherited is held once this process lets go of it.
func wantNothingLeft(t *testing.T, req FuseRequest, lock string) {
	t.Helper()
	req.Inherit[0].Close()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && startedWith(pid, req.PIDFile) {
			t.Errorf("%s %d still runs after StartFuse failed", Binary, pid)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+req.File+" ") {
		t.Errorf("the FUSE export is still mounted on %s", req.File)
	}
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("the inherited lock is still held after StartFuse failed: %v", err)
	}
}

// Ctrl-C after the daemon has forked: StartFuse returns the cause, and
// stops the daemon, which would otherwise hold the lock it inherited.
func TestFuseCancelledAfterFork(t *testing.T) {
	need(t, Binary, "qemu-img", "qemu-io")
	req, lock := fuseFixture(t)
	forked, release := slowParent(t)
	stop := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		for i := 0; i < 3000; i++ {
			if _, err := os.Stat(forked); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel(stop)
		os.WriteFile(release, nil, 0o600)
	}()
	f, err := StartFuse(ctx, req)
	if !errors.Is(err, stop) {
		t.Errorf("StartFuse cancelled after the fork: %+v, %v; want the cause %q", f, err, stop)
	}
	wantNothingLeft(t, req, lock)
}

// A pid file that cannot be read (here: gone) still leaves no daemon:
// StartFuse finds it by the pid file its command line names.
func TestFusePIDFileUnreadable(t *testing.T) {
	need(t, Binary, "qemu-img", "qemu-io")
	req, lock := fuseFixture(t)
	defer func(r func(string) (int, error)) { readPID = r }(readPID)
	readPID = func(p string) (int, error) {
		os.Remove(p)
		return 0, fmt.Errorf("%s: unreadable", p)
	}
	f, err := StartFuse(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("StartFuse with an unreadable pid file: %+v, %v", f, err)
	}
	wantNothingLeft(t, req, lock)
}
