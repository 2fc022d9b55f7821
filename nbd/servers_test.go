package nbd

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// The tests below run against real servers: qemu-nbd (Debian's qemu-utils)
// and nbdkit with its plugins and filters (Debian's nbdkit). Where one is
// missing a test skips, except under CI=true, where it fails.

// server is a running NBD server process.
type server struct {
	cmd    *exec.Cmd
	target Target
	stderr *bytes.Buffer
}

func (s *server) uri() string { return s.target.String() }

func (s *server) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// startServer runs bin with args, in which "SOCK" stands for a fresh Unix
// socket path, and waits until it accepts connections.
func startServer(t testing.TB, bin string, args ...string) *server {
	t.Helper()
	testbed.Need(t, bin)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "SOCK", sock)
	}
	return start(t, Target{Network: "unix", Address: sock}, bin, args...)
}

// startTCPServer is startServer listening on 127.0.0.1; "PORT" in args
// stands for a free port.
func startTCPServer(t testing.TB, bin string, args ...string) *server {
	t.Helper()
	testbed.Need(t, bin)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "PORT", port)
	}
	return start(t, Target{Network: "tcp", Address: "127.0.0.1:" + port}, bin, args...)
}

func start(t testing.TB, target Target, bin string, args ...string) *server {
	t.Helper()
	s := &server{target: target, stderr: &bytes.Buffer{}}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	exited := make(chan struct{})
	go func() { s.cmd.Process.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial(target.Network, target.Address)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("%s %v exited: %s", bin, args, s.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %v: not listening after 15s: %s", bin, args, s.stderr)
		}
	}
}

// nbdkit starts nbdkit in the foreground on a Unix socket.
func nbdkit(t testing.TB, args ...string) *server {
	return startServer(t, "nbdkit", append([]string{"-f", "--exit-with-parent", "-U", "SOCK"}, args...)...)
}

// qemuNBD serves img with qemu-nbd on a Unix socket, for any number of
// clients, one after the other or at once.
func qemuNBD(t testing.TB, img string, args ...string) *server {
	return startServer(t, "qemu-nbd", append([]string{"--socket=SOCK", "-t", "-e", "16"}, append(args, img)...)...)
}

// run runs a command that must succeed and returns its output.

func dial(t testing.TB, uri string, opts Options) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// patternAt is what nbdkit's pattern plugin serves at off: each 8-byte
// word holds its own offset, big-endian.
func patternAt(off uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		o := off + uint64(i)
		word := o &^ 7
		b[i] = byte(word >> (56 - 8*(o&7)))
	}
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mib(n int) string { return fmt.Sprintf("%dM", n) }
