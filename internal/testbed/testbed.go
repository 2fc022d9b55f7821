// Package testbed gives integration tests a hermetic libvirtd + QEMU: a
// session-mode libvirtd of the unprivileged user vbtest whose whole state
// lives in one folder, driven through scripts/testbed.sh and virsh.
//
// A test package that uses it runs its tests through Main, so that the bed
// it started is stopped when the tests end:
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }
//
//	func TestBackup(t *testing.T) {
//		bed := testbed.Get(t) // skips (fails when CI=true) if no bed can run here
//		dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
//		bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
//		conn, _ := libvirt.NewConnect(bed.URI())
//		...
//	}
//
// bed.Guest(t) is a booted Linux guest with a QEMU guest agent (see
// guest.go): its filesystem can be frozen, and bed.GuestRun/GuestStart run
// scripts in it, for real guest writes.
//
// With VBACKUP_TESTBED=DIR naming a bed that is up (testbed.sh up DIR), the
// tests use it and leave it running; otherwise each test process starts its
// own bed in a temporary folder.
package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// EnvDir names the environment variable that points at a bed to reuse.
const EnvDir = "VBACKUP_TESTBED"

// Time limits of the script's sub-commands.
const (
	upTimeout   = 2 * time.Minute
	downTimeout = 2 * time.Minute
	opTimeout   = time.Minute
)

// Bed is a running libvirtd of the test bed. Its methods are safe for
// concurrent use by parallel tests.
type Bed struct {
	dir    string
	uri    string
	script string

	mu      sync.Mutex
	formats map[string]string // "domain/disk" -> image format, of the domains made here
}

var (
	mainActive atomic.Bool  // Main runs the tests: one bed for the whole process
	domainSeq  atomic.Int64 // makes domain names unique within the process

	sharedMu    sync.Mutex
	sharedBed   *Bed
	sharedErr   error
	sharedOwned bool // started here, so stopped here
	sharedDone  bool // torn down: no new bed after that
)

// Main runs the tests of m and then stops the bed that Get started, if any;
// it returns the exit code for os.Exit. SIGINT and SIGTERM also stop the bed
// before the process exits.
func Main(m *testing.M) int {
	mainActive.Store(true)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	stop := make(chan struct{})
	go func() {
		select {
		case sig := <-sigc:
			fmt.Fprintf(os.Stderr, "testbed: %v: stopping the test bed\n", sig)
			if err := teardown(); err != nil {
				fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
			}
			if err := teardownRemote(); err != nil {
				fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
			}
			code := 1
			if s, ok := sig.(syscall.Signal); ok {
				code = 128 + int(s)
			}
			os.Exit(code)
		case <-stop:
		}
	}()
	code := m.Run()
	if err := removeSharedGuests(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
	}
	signal.Stop(sigc)
	close(stop)
	if err := teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if err := teardownRemote(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// teardown stops the shared bed if this process started it.
func teardown() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	sharedDone = true
	if sharedBed == nil || !sharedOwned {
		return nil
	}
	b := sharedBed
	sharedBed = nil
	return b.down()
}

// Get returns the test bed. Under Main it is one bed for the whole test
// process: the bed named by VBACKUP_TESTBED if it is up, else one started in a
// temporary folder. Without Main, each call starts a bed that t's cleanup
// stops. When no bed can run here (not root, libvirtd missing...), Get skips
// t, or fails it when CI=true.
func Get(t testing.TB) *Bed {
	t.Helper()
	if !mainActive.Load() {
		b, err := start()
		if err != nil {
			unavailable(t, err)
		}
		t.Logf("testbed: no testbed.Main in TestMain: this bed (%s) lives for %s only", b.dir, t.Name())
		t.Cleanup(func() {
			if err := b.down(); err != nil {
				t.Errorf("testbed: %v", err)
			}
		})
		return b
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	switch {
	case sharedBed != nil:
		return sharedBed
	case sharedErr != nil:
	case sharedDone:
		sharedErr = errors.New("the test bed was already stopped")
	default:
		sharedBed, sharedOwned, sharedErr = open()
	}
	if sharedErr != nil {
		unavailable(t, sharedErr)
	}
	return sharedBed
}

func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("testbed: cannot run a test bed (CI=true, so this fails instead of skipping): %v", err)
	}
	t.Skipf("testbed: cannot run a test bed, skipping: %v", err)
}

// open returns the bed of VBACKUP_TESTBED if it is up, else starts one.
func open() (b *Bed, owned bool, err error) {
	if dir := os.Getenv(EnvDir); dir != "" {
		b, err := reuse(dir)
		if err == nil {
			return b, false, nil
		}
		fmt.Fprintf(os.Stderr, "testbed: %s=%s is not usable (%v): starting a bed of this process\n", EnvDir, dir, err)
	}
	b, err = start()
	return b, err == nil, err
}

func reuse(dir string) (*Bed, error) {
	script, err := Script()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "uri"))
	if err != nil {
		return nil, fmt.Errorf("not up: %w", err)
	}
	b := newBed(dir, strings.TrimSpace(string(raw)), script)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.virsh(ctx, "version"); err != nil {
		return nil, fmt.Errorf("not up: %w", err)
	}
	return b, nil
}

func newBed(dir, uri, script string) *Bed {
	return &Bed{dir: dir, uri: uri, script: script, formats: map[string]string{}}
}

// start brings a new bed up in a temporary folder.
func start() (*Bed, error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	script, err := Script()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(), "vbtb-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	b := newBed(dir, "", script)
	out, err := b.run(ctx, "up", dir)
	if err != nil {
		if derr := b.down(); derr != nil {
			err = fmt.Errorf("%w; and then: %v", err, derr)
		}
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	b.uri = strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(b.uri, "qemu+unix://") {
		err := fmt.Errorf("testbed.sh up printed %q, not a URI", out)
		if derr := b.down(); derr != nil {
			err = fmt.Errorf("%w; and then: %v", err, derr)
		}
		return nil, err
	}
	return b, nil
}

// preflight tells early, with a plain reason, why no bed can run here.
func preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it creates the user vbtest and runs libvirtd as that user)")
	}
	var missing []string
	for _, c := range []string{"bash", "libvirtd", "virsh", "qemu-system-x86_64", "qemu-img", "runuser", "setsid", "flock", "xmllint", "openssl"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (see scripts/install-deps.sh)", strings.Join(missing, ", "))
	}
	return nil
}

// tempBase is where beds are made: the temporary folder if vbtest can reach
// it and it is short, else /tmp. testbed.sh takes a DIR of at most 32
// characters (QEMU's monitor socket under it must fit in 107 bytes), and
// MkdirTemp adds "/vbtb-" and up to 10 digits.
func tempBase() string {
	base := os.TempDir()
	if len(base) > 16 || !othersCanEnter(base) {
		return "/tmp"
	}
	return base
}

func othersCanEnter(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" || d == "." {
			return true
		}
	}
}

// Script returns the path of scripts/testbed.sh, found from the working
// directory up to the module root (the folder with go.mod).
func Script() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "scripts", "testbed.sh")
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// ModuleRoot returns the nearest folder, from the working directory up, that
// holds a go.mod.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or above", wd)
		}
	}
}

// URI is the libvirt connection URI of the bed, for root.
func (b *Bed) URI() string { return b.uri }

// Dir is the bed's folder.
func (b *Bed) Dir() string { return b.dir }

// TLSClientDir is the client side of the bed's backup TLS: a folder with
// ca-cert.pem, client-cert.pem and client-key.pem, as QEMU and libnbd name
// them. The bed's libvirtd serves pull jobs with TLS (backup-begin --tls) with
// a server certificate of the same CA, for localhost, 127.0.0.1 and ::1, and
// requires a client certificate (qemu.conf's backup_tls_x509_verify = 1). It
// fails t on a bed whose libvirtd was started by a testbed.sh without TLS.
func (b *Bed) TLSClientDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(b.dir, "pki", "client")
	for _, f := range []string{"ca-cert.pem", "client-cert.pem", "client-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("testbed: the bed in %s has no backup TLS certificates (%v); restart it: testbed.sh down %s; testbed.sh up %s", b.dir, err, b.dir, b.dir)
		}
	}
	return dir
}

// Domain defines and starts a fresh domain (TCG, no OS) with the given disks,
// each "DISK:FORMAT:SIZE" such as "vda:qcow2:64M" or "vdb:raw:16M" (none: one
// vda:qcow2:64M), and returns its name. t's cleanup destroys and undefines it
// (with its checkpoint metadata) and removes its images.
func (b *Bed) Domain(t testing.TB, disks ...string) string {
	t.Helper()
	name := domainName(t.Name())
	formats := map[string]string{}
	specs := disks
	if len(specs) == 0 {
		specs = []string{"vda:qcow2:64M"}
	}
	for _, d := range specs {
		f := strings.Split(d, ":")
		if len(f) != 3 {
			t.Fatalf("testbed: bad disk %q: want DISK:FORMAT:SIZE", d)
		}
		formats[f[0]] = f[1]
	}
	// Cleanup first: a domain defined but not started is removed too.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if _, err := b.run(ctx, "undomain", b.dir, name); err != nil {
			t.Errorf("testbed: removing domain %s: %v", name, err)
		}
		b.mu.Lock()
		for disk := range formats {
			delete(b.formats, name+"/"+disk)
		}
		b.mu.Unlock()
	})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.run(ctx, append([]string{"domain", b.dir, name}, disks...)...); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	b.mu.Lock()
	for disk, f := range formats {
		b.formats[name+"/"+disk] = f
	}
	b.mu.Unlock()
	return name
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// domainName makes a unique, valid domain name from a test name.
func domainName(testName string) string {
	s := unsafeName.ReplaceAllString(testName, "_")
	if len(s) > 40 {
		s = s[:40]
	}
	if s == "" || !isAlnum(s[0]) {
		s = "vb" + s
	}
	return fmt.Sprintf("%s-%d-%d", s, os.Getpid(), domainSeq.Add(1))
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// DiskPath returns the image file of disk (such as "vda") of a domain made by
// Domain, or "" if there is none.
func (b *Bed) DiskPath(domain, disk string) string {
	b.mu.Lock()
	f, ok := b.formats[domain+"/"+disk]
	b.mu.Unlock()
	if ok {
		return filepath.Join(b.dir, "images", domain, disk+"."+f)
	}
	// A domain made by another process of a shared bed.
	for _, f := range []string{"qcow2", "raw"} {
		p := filepath.Join(b.dir, "images", domain, disk+"."+f)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Write writes length bytes of pattern at offset of the running domain's
// disk, through QEMU's own block backend of that disk (as a guest would), and
// flushes it so that readers of the image file see it.
func (b *Bed) Write(t testing.TB, domain, disk string, pattern byte, offset, length int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.run(ctx, "write", b.dir, domain, disk,
		fmt.Sprintf("0x%02x", pattern), strconv.FormatInt(offset, 10), strconv.FormatInt(length, 10)); err != nil {
		t.Fatalf("testbed: %v", err)
	}
}

// Virsh runs virsh on the bed and returns its standard output; it fails t,
// with virsh's standard error, if virsh fails.
func (b *Bed) Virsh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := b.TryVirsh(args...)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	return out
}

// TryVirsh is Virsh for commands that may fail: the error carries virsh's
// standard error.
func (b *Bed) TryVirsh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return b.virsh(ctx, args...)
}

func (b *Bed) virsh(ctx context.Context, args ...string) (string, error) {
	return command(ctx, "virsh", append([]string{"-c", b.uri}, args...)...)
}

// run runs a sub-command of testbed.sh.
func (b *Bed) run(ctx context.Context, args ...string) (string, error) {
	return command(ctx, "bash", append([]string{b.script}, args...)...)
}

func (b *Bed) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
	defer cancel()
	_, err := b.run(ctx, "down", b.dir)
	return err
}

func command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Whatever a command leaves running must not hold our pipes open.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

var folders atomic.Int64

// Folder makes a fresh, empty folder inside the bed, owned by the user QEMU
// runs as, for backup targets, scratch files and NBD sockets; t's cleanup
// removes it. Its path is short, so a socket in it stays within the 107
// bytes a unix socket path may have.
func (b *Bed) Folder(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(b.dir, "o", strconv.FormatInt(folders.Add(1), 10))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "vbtest:", filepath.Dir(dir), dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Need skips t when a tool it runs is not installed, or fails it when
// CI=true, where a skipped test would hide that it never ran.
func Need(t testing.TB, bins ...string) {
	t.Helper()
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (CI=true forbids skipping)", bin)
			}
			t.Skipf("%s is not installed (scripts/install-deps.sh installs it)", bin)
		}
	}
}

// NeedRoot skips t when it does not run as root (what: what needs it), or
// fails it when CI=true, as Need does.
func NeedRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs root (CI=true forbids skipping)", what)
	}
	t.Skipf("%s needs root", what)
}

// Run runs a tool the test needs (see Need) and returns its output; a
// failure fails t with the tool's output.
func Run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	Need(t, bin)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}
