package qemunbd

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/nbd"
)

func run(t testing.TB, bin string, args ...string) {
	t.Helper()
	testbed.Need(t, bin)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func serve(t *testing.T, path, format string) *Server {
	t.Helper()
	testbed.Need(t, "qemu-nbd")
	s, err := Serve(testCtx(t), path, format)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll reads the whole export at uri.
func readAll(t *testing.T, uri string) []byte {
	t.Helper()
	ctx := testCtx(t)
	c, err := nbd.Dial(ctx, uri, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, c.Export().Size)
	if err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestServeQcow2(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "2M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", img)
	s := serve(t, img, "qcow2")

	want := append(bytes.Repeat([]byte{0xab}, 1<<20), make([]byte, 1<<20)...)
	if got := readAll(t, s.URI()); !bytes.Equal(got, want) {
		t.Errorf("read %d bytes, not 1 MiB of 0xab then 1 MiB of zeroes", len(got))
	}

	conns, err := nbd.DialMulti(testCtx(t), s.URI(), nbd.Options{}, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		defer c.Close()
	}
	f := conns[0].Export().Flags
	if !f.ReadOnly() || !f.CanMultiConn() || len(conns) != 4 {
		t.Errorf("read-only %v, multi-conn %v, %d connections; want true, true, 4", f.ReadOnly(), f.CanMultiConn(), len(conns))
	}
}

func TestServeChain(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.raw"), filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "2M")
	run(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 0 1M", base)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", top)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 512K 1M", top)
	s := serve(t, top, "qcow2")

	want := make([]byte, 2<<20)
	copy(want, bytes.Repeat([]byte{0xab}, 1<<20))
	copy(want[512<<10:], bytes.Repeat([]byte{0xcd}, 1<<20))
	if got := readAll(t, s.URI()); !bytes.Equal(got, want) {
		t.Error("the overlay does not read as the chain")
	}
}

func TestServeErrors(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.qcow2")
	_, err := Serve(testCtx(t), missing, "qcow2")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing image: %v; want ErrNotExist naming %s", err, missing)
	}

	top, gone := filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "gone.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", gone, "-F", "qcow2", top, "1M")
	_, err = Serve(testCtx(t), top, "qcow2")
	if err == nil || !strings.Contains(err.Error(), top) || !strings.Contains(err.Error(), "'"+gone+"'") {
		t.Errorf("missing backing file: %v; want an error naming %s and %s", err, top, gone)
	}
	t.Log(err)

	_, err = Serve(testCtx(t), top, "")
	if err == nil || !strings.Contains(err.Error(), "no image format") {
		t.Errorf("no format: %v", err)
	}

	// A qcow2 served as raw is no error: its bytes are the content.
	// A raw file served as qcow2 is, with qemu-nbd's reason.
	raw := filepath.Join(dir, "disk.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", raw, "1M")
	_, err = Serve(testCtx(t), raw, "qcow2")
	if err == nil || !strings.Contains(err.Error(), "qcow2") || !strings.Contains(err.Error(), raw) {
		t.Errorf("raw as qcow2: %v", err)
	}
	t.Log(err)
}

func TestClose(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
	s := serve(t, img, "raw")
	// A client still connected must not keep qemu-nbd alive.
	c, err := nbd.Dial(testCtx(t), s.URI(), nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pid := s.cmd.Process.Pid
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("folder %s after Close: %v", s.dir, err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu-nbd (pid %d) after Close: %v; want ESRCH", pid, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestURI(t *testing.T) {
	s := &Server{sock: "/tmp/vbackup-nbd-1/nbd.sock"}
	got, err := nbd.ParseURI(s.URI())
	if err != nil || got.Network != "unix" || got.Address != s.sock || got.Export != "" {
		t.Errorf("URI %q parses as %+v, %v", s.URI(), got, err)
	}
}
