package testbed

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestDomainName(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$`)
	seen := map[string]bool{}
	for _, in := range []string{"TestX", "TestX/sub test#01", "/weird", "", strings.Repeat("a", 200)} {
		n := domainName(in)
		if !valid.MatchString(n) {
			t.Errorf("domainName(%q) = %q: not a valid name for testbed.sh", in, n)
		}
		if seen[n] {
			t.Errorf("domainName(%q) = %q: given twice", in, n)
		}
		seen[n] = true
	}
}

func TestScript(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module vbackup\n") {
		t.Fatalf("ModuleRoot() = %s: not vbackup's (%v)", root, err)
	}
	s, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", s, err, out)
	}
}

// Usage errors exit with 2 before anything needs root.
func TestScriptUsage(t *testing.T) {
	s, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"up"},
		{"up", "a", "b"},
		{"domain", "/tmp/x"},
		{"domain", "/tmp/x", "bad name"},
		{"domain", "/tmp/x", "d", "vda:vmdk:1M"},
		{"domain", "/tmp/x", "d", "vda:raw:1M", "vda:raw:1M"},
		{"write", "/tmp/x", "d", "vda", "0x100", "0", "1k"},
		{"write", "/tmp/x", "d", "vda", "0xcd", "-1", "1k"},
		{"undomain", "/tmp/x"},
		{"guest", "/tmp/x", "g"},
		{"down"},
	} {
		cmd := exec.Command("bash", append([]string{s}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("testbed.sh %q: %v, want exit status 2\n%s", args, err, out)
		}
	}
	out, err := exec.Command("bash", s, "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "testbed.sh up DIR") {
		t.Errorf("testbed.sh help: %v\n%s", err, out)
	}
}

func TestBed(t *testing.T) {
	bed := Get(t)
	if !strings.HasPrefix(bed.URI(), "qemu+unix:///session?socket="+bed.Dir()+"/") {
		t.Errorf("URI() = %q, Dir() = %q", bed.URI(), bed.Dir())
	}
	if got := bed.Virsh(t, "uri"); strings.TrimSpace(got) != bed.URI() {
		t.Errorf("virsh uri = %q, want %q", got, bed.URI())
	}
	if _, err := bed.TryVirsh("dominfo", "no-such-domain"); err == nil || !strings.Contains(err.Error(), "no-such-domain") {
		t.Errorf("TryVirsh of a failing command: %v, want virsh's error", err)
	}

	var dom, vda, vdb string
	t.Run("domain", func(t *testing.T) {
		start := time.Now()
		dom = bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
		t.Logf("Domain: %v", time.Since(start))
		if got := strings.TrimSpace(bed.Virsh(t, "domstate", dom)); got != "running" {
			t.Fatalf("domstate %s = %q, want running", dom, got)
		}
		vda, vdb = bed.DiskPath(dom, "vda"), bed.DiskPath(dom, "vdb")
		if vda != filepath.Join(bed.Dir(), "images", dom, "vda.qcow2") || vdb != filepath.Join(bed.Dir(), "images", dom, "vdb.raw") {
			t.Fatalf("DiskPath: vda %q, vdb %q", vda, vdb)
		}
		blk := bed.Virsh(t, "domblklist", dom)
		if !strings.Contains(blk, vda) || !strings.Contains(blk, vdb) {
			t.Fatalf("domblklist %s does not name the images:\n%s", dom, blk)
		}
		if bed.DiskPath(dom, "vdc") != "" {
			t.Errorf("DiskPath(%s, vdc) is not empty", dom)
		}
		// A checkpoint must not keep the cleanup from undefining the domain.
		bed.Virsh(t, "checkpoint-create-as", dom, "c1", "--diskspec", "vdb,checkpoint=no")

		start = time.Now()
		bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
		t.Logf("Write: %v", time.Since(start))
		bed.Write(t, dom, "vdb", 0xab, 1<<20, 64<<10)
		readPattern(t, "qcow2", vda, "0xcd", "4M", "512k", true)
		readPattern(t, "qcow2", vda, "0xcd", "0", "512k", false) // the check can fail
		readPattern(t, "qcow2", vda, "0", "0", "4M", true)
		readPattern(t, "raw", vdb, "0xab", "1M", "64k", true)
		readPattern(t, "raw", vdb, "0xab", "2M", "64k", false)

		// Idempotent: the same domain again is a no-op.
		if _, err := bed.run(context.Background(), "domain", bed.Dir(), dom); err != nil {
			t.Errorf("domain again: %v", err)
		}
	})
	if dom == "" {
		t.FailNow()
	}
	// The sub-test's cleanup has run.
	if out, err := bed.TryVirsh("dominfo", dom); err == nil {
		t.Errorf("domain %s still exists after cleanup:\n%s", dom, out)
	}
	if _, err := os.Stat(filepath.Dir(vda)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("images of %s still there after cleanup: %v", dom, err)
	}
	if bed.DiskPath(dom, "vda") != "" {
		t.Errorf("DiskPath after cleanup = %q", bed.DiskPath(dom, "vda"))
	}
}

// The bed's backup TLS: the client side verifies the server's certificate
// for the addresses a pull job listens on, and QEMU, as the bed user, can
// read the server side that qemu.conf names.
func TestTLSCertificates(t *testing.T) {
	bed := Get(t)
	client := bed.TLSClientDir(t)
	server := filepath.Join(bed.Dir(), "pki", "backup")
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		flag := "-verify_hostname"
		if strings.Contains(name, ".") || strings.Contains(name, ":") {
			flag = "-verify_ip"
		}
		if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(client, "ca-cert.pem"), flag, name, "-purpose", "sslserver",
			filepath.Join(server, "server-cert.pem")).CombinedOutput(); err != nil {
			t.Errorf("the server certificate for %s: %v\n%s", name, err, out)
		}
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(server, "ca-cert.pem"), "-purpose", "sslclient",
		filepath.Join(client, "client-cert.pem")).CombinedOutput(); err != nil {
		t.Errorf("the client certificate: %v\n%s", err, out)
	}
	if out, err := exec.Command("runuser", "-u", "vbtest", "--", "cat", filepath.Join(server, "server-key.pem")).CombinedOutput(); err != nil {
		t.Errorf("the bed user cannot read the server key: %v\n%s", err, out)
	}
	conf, err := os.ReadFile(filepath.Join(bed.Dir(), ".config", "libvirt", "qemu.conf"))
	if err != nil || !strings.Contains(string(conf), `backup_tls_x509_cert_dir = "`+server+`"`) || !strings.Contains(string(conf), "backup_tls_x509_verify = 1") {
		t.Errorf("the session daemon's qemu.conf (%v):\n%s", err, conf)
	}
}

// readPattern reads the image file, outside QEMU, and checks that the range
// holds the pattern (want) or does not (!want).
func readPattern(t *testing.T, format, img, pattern, offset, length string, want bool) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-U", "-r", "-f", format,
		"-c", "read -P "+pattern+" "+offset+" "+length, img).CombinedOutput()
	if err != nil && want {
		t.Fatalf("qemu-io read %s: %v\n%s", img, err, out)
	}
	got := !strings.Contains(string(out), "Pattern verification failed") && strings.Contains(string(out), "read ")
	if got != want {
		t.Errorf("%s at %s+%s holds pattern %s: %v, want %v\n%s", img, offset, length, pattern, got, want, out)
	}
}

func TestParallelDomains(t *testing.T) {
	bed := Get(t)
	for _, name := range []string{"a", "b", "c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dom := bed.Domain(t)
			if got := strings.TrimSpace(bed.Virsh(t, "domstate", dom)); got != "running" {
				t.Errorf("domstate %s = %q", dom, got)
			}
			bed.Write(t, dom, "vda", 0x5a, 0, 64<<10)
			readPattern(t, "qcow2", bed.DiskPath(dom, "vda"), "0x5a", "0", "64k", true)
		})
	}
}

// A bed of its own: up twice (idempotent), a domain, down; nothing of it may
// be left running.
func TestUpDown(t *testing.T) {
	shared := Get(t) // skips when no bed can run here
	dir, err := os.MkdirTemp(tempBase(), "vbtb-")
	if err != nil {
		t.Fatal(err)
	}
	b := newBed(dir, "", shared.script)
	ctx := context.Background()
	start := time.Now()
	uri, err := b.run(ctx, "up", dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Logf("up: %v", time.Since(start))
	b.uri = strings.TrimSpace(uri)
	defer b.down()
	again, err := b.run(ctx, "up", dir)
	if err != nil || again != uri {
		t.Errorf("up again: %q, %v; want %q", again, err, uri)
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "uri")); err != nil || string(raw) != uri {
		t.Errorf("DIR/uri: %q, %v; want %q", raw, err, uri)
	}
	start = time.Now()
	if _, err := b.run(ctx, "domain", dir, "d1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("domain: %v", time.Since(start))
	if len(bedProcesses(t, dir)) < 3 { // libvirtd, virtlogd, qemu
		t.Errorf("expected libvirtd, virtlogd and QEMU: %v", bedProcesses(t, dir))
	}
	start = time.Now()
	if err := b.down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("down: %v", time.Since(start))
	if p := bedProcesses(t, dir); len(p) > 0 {
		t.Errorf("left running after down: %v", p)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after down: %v", dir, err)
	}
	if err := b.down(); err != nil {
		t.Errorf("down again: %v", err)
	}
	// The shared bed is untouched.
	if _, err := shared.TryVirsh("version"); err != nil {
		t.Errorf("the shared bed stopped answering: %v", err)
	}
}

// bedProcesses lists the command lines of processes whose command line or
// environment mentions dir.
func bedProcesses(t *testing.T, dir string) []string {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		cmdline, err1 := os.ReadFile(p + "/cmdline")
		environ, err2 := os.ReadFile(p + "/environ")
		if err1 != nil || err2 != nil {
			continue
		}
		for _, field := range strings.Split(string(cmdline)+"\x00"+string(environ), "\x00") {
			if field == dir || strings.Contains(field, dir+"/") || strings.HasSuffix(field, "="+dir) {
				found = append(found, p+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
				break
			}
		}
	}
	return found
}
