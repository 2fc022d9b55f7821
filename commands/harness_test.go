package commands

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v3"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
	"vbackup/virt/virttest"
)

func TestMain(m *testing.M) {
	code := testbed.Main(m)
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

// vbackupBinary builds the vbackup binary, once per test process, for the
// tests that run it as a process of its own (signals, terminals, shell
// completion), and returns its path.
func vbackupBinary(tb testing.TB) string {
	tb.Helper()
	binaryOnce.Do(func() {
		root, err := testbed.ModuleRoot()
		if err != nil {
			binaryErr = err
			return
		}
		if binaryDir, binaryErr = os.MkdirTemp("", "vbackup-bin-"); binaryErr != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		binaryPath = filepath.Join(binaryDir, "vbackup")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", binaryPath, ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		tb.Fatalf("building vbackup: %v", binaryErr)
	}
	return binaryPath
}

// result is what a user sees of one invocation.
type result struct {
	code           int
	stdout, stderr string
}

func testEnv(open OpenFunc, environ map[string]string) (*Env, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &Env{
		Stdin:  strings.NewReader(""),
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return environ[k] },
		Now:    time.Now,
		Open:   open,
		// In-process runs get no signals; the real binary's tests send them.
		Signals: func() (<-chan os.Signal, func()) { return make(chan os.Signal), func() {} },
		Width:   func() int { return 80 },
		Exit:    func(code int) { panic("a command tried to exit the test process") },
		// No client certificates but those a test gives.
		CertDirs: func() []string { return nil },
	}, &stdout, &stderr
}

// vb runs the whole command line, as main does.
func vb(t *testing.T, open OpenFunc, args ...string) result {
	t.Helper()
	return vbEnv(t, open, nil, args...)
}

func vbEnv(t *testing.T, open OpenFunc, environ map[string]string, args ...string) result {
	t.Helper()
	env, stdout, stderr := testEnv(open, environ)
	code := Main(context.Background(), append([]string{"vbackup"}, args...), env)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// parse runs only the flag layer of one command: it returns the options the
// command would run with, or the exit code and stderr of a usage error.
func parse[O any](t *testing.T, newCmd func(*Env, func(context.Context, *Env, O) error) *cli.Command, args ...string) (O, result) {
	t.Helper()
	var got O
	env, stdout, stderr := testEnv(func(context.Context, string, io.Writer) (virt.Conn, error) {
		t.Fatal("the flag layer opened a connection")
		return nil, nil
	}, nil)
	ran := false
	root := rootWith(env, newCmd(env, func(_ context.Context, _ *Env, o O) error {
		got, ran = o, true
		return nil
	}))
	code := report(env, root.Run(context.Background(), append([]string{"vbackup"}, args...)))
	if code == ExitOK && !ran {
		t.Fatalf("%v: exit 0 without running the command", args)
	}
	return got, result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// testDriver opens one connection to a fresh test-driver node (domain vm1:
// vda qcow2, vdb raw) and hands it to every invocation of the test, so that
// checkpoints made by one are seen by the next, as with a daemon.
func testDriver(t *testing.T) OpenFunc {
	t.Helper()
	conn, err := libvirtconn.Open(context.Background(), virttest.TestDriverURI(t), libvirtconn.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func(context.Context, string, io.Writer) (virt.Conn, error) { return keepOpen{conn}, nil }
}

// keepOpen is a connection whose Close is left to the test.
type keepOpen struct{ virt.Conn }

func (keepOpen) Close() error { return nil }

// realDaemon opens the connection the test bed names, per invocation.
func realDaemon(t *testing.T) (OpenFunc, *testbed.Bed) {
	bed := testbed.Get(t)
	return func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
		if uri == "" {
			uri = bed.URI()
		}
		c, err := libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
		if err != nil {
			return nil, err
		}
		return c, nil
	}, bed
}

// domainHandle looks a domain up on a connection of its own, closed with
// the test, for what no command does (setting a job record by hand).
func domainHandle(t *testing.T, open OpenFunc, name string) virt.Domain {
	t.Helper()
	conn, err := open(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d, err := conn.Domain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantStderr(t *testing.T, r result, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.stderr, p) {
			t.Errorf("stderr lacks %q:\n%s", p, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "virError") {
		t.Errorf("stderr leaks a raw libvirt error:\n%s", r.stderr)
	}
}
