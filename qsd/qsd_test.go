package qsd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func need(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (CI=true forbids skipping)", b)
			}
			t.Skipf("%s is not installed (scripts/install-deps.sh installs it)", b)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("FUSE exports need root here (CI=true forbids skipping)")
		}
		t.Skip("FUSE exports need root")
	}
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
