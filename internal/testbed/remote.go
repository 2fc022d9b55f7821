package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvRemoteDir names the environment variable that points at a second host
// to reuse (scripts/remotehost.sh up DIR).
const EnvRemoteDir = "VBACKUP_REMOTEHOST"

// Remote is a second host (scripts/remotehost.sh): its own network and
// mount namespaces, sshd, and a session libvirtd of its user vbremote with
// QEMU (and a system one: System). Tests reach it over SSH only: none of its files or sockets is seen
// from the test process, so a test that reads a local path where it should
// go through SSH fails.
//
//	host := testbed.GetRemote(t) // skips (fails when CI=true) if none can run
//	dom := host.Domain(t, "vda:qcow2:64M")
//	host.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
//	vb(t, open, "-c", host.URI(), "backup", dom, "--to", dir)
//	want := host.DiskSum(t, dom, "vda") // the disk's raw content, read through SSH
type Remote struct {
	dir, uri, addr string
	script         string
	// Whom the helpers log in as, the daemon their virsh speaks to on the
	// host, and where Domain puts images there: vbremote's session daemon,
	// or root's system daemon (System).
	user, local, images string
	// The system daemon's URIs (scripts/remotehost.sh DIR/system_uri,
	// DIR/system_member_uri).
	systemURI, memberURI string
}

var (
	remoteMu    sync.Mutex
	remoteHost  *Remote
	remoteErr   error
	remoteOwned bool
)

const remoteUser = "vbremote"

// GetRemote returns the second host: the one of VBACKUP_REMOTEHOST if it is
// up, else one started for the test process (stopped by Main) or, without
// Main, for t.
func GetRemote(t testing.TB) *Remote {
	t.Helper()
	if !mainActive.Load() {
		r, err := startRemote()
		if err != nil {
			unavailable(t, err)
		}
		t.Cleanup(func() {
			if err := r.down(); err != nil {
				t.Errorf("testbed: %v", err)
			}
		})
		return r
	}
	remoteMu.Lock()
	defer remoteMu.Unlock()
	if remoteHost == nil && remoteErr == nil {
		if dir := os.Getenv(EnvRemoteDir); dir != "" {
			if r, err := reuseRemote(dir); err == nil {
				remoteHost = r
			} else {
				fmt.Fprintf(os.Stderr, "testbed: %s=%s is not usable (%v): starting a host of this process\n", EnvRemoteDir, dir, err)
			}
		}
		if remoteHost == nil {
			remoteHost, remoteErr = startRemote()
			remoteOwned = remoteErr == nil
		}
	}
	if remoteErr != nil {
		unavailable(t, remoteErr)
	}
	return remoteHost
}

// teardownRemote stops the second host if this process started it.
func teardownRemote() error {
	remoteMu.Lock()
	defer remoteMu.Unlock()
	if remoteHost == nil || !remoteOwned {
		return nil
	}
	r := remoteHost
	remoteHost, remoteErr = nil, errors.New("the remote host was already stopped")
	return r.down()
}

func remoteScript() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "scripts", "remotehost.sh")
	_, err = os.Stat(p)
	return p, err
}

func startRemote() (*Remote, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a remote host needs root (network namespaces)")
	}
	for _, c := range []string{"ip", "unshare", "ssh", "/usr/sbin/sshd", "libvirtd", "virsh", "virt-ssh-helper"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("missing %s (see scripts/install-deps.sh)", c)
		}
	}
	script, err := remoteScript()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(), "vbrh-")
	if err != nil {
		return nil, err
	}
	r := newRemote(dir, script)
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	if _, err := r.run(ctx, "up", dir); err != nil {
		if derr := r.down(); derr != nil {
			err = fmt.Errorf("%w; and then: %v", err, derr)
		}
		return nil, err
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func reuseRemote(dir string) (*Remote, error) {
	script, err := remoteScript()
	if err != nil {
		return nil, err
	}
	r := newRemote(dir, script)
	if err := r.load(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, d := range []*Remote{r, r.system()} {
		if _, err := d.ssh(ctx, nil, "virsh -c "+d.local+" version"); err != nil {
			return nil, fmt.Errorf("not up: %w", err)
		}
	}
	return r, nil
}

func newRemote(dir, script string) *Remote {
	return &Remote{dir: dir, script: script, user: remoteUser, local: "qemu:///session", images: "/home/" + remoteUser + "/images"}
}

func (r *Remote) load() error {
	for _, f := range []struct {
		name string
		to   *string
	}{{"uri", &r.uri}, {"host", &r.addr}, {"system_uri", &r.systemURI}, {"system_member_uri", &r.memberURI}} {
		b, err := os.ReadFile(filepath.Join(r.dir, f.name))
		if err != nil {
			return err
		}
		*f.to = strings.TrimSpace(string(b))
	}
	return nil
}

func (r *Remote) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, r.script, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("remotehost.sh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func (r *Remote) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
	defer cancel()
	_, err := r.run(ctx, "down", r.dir)
	return err
}

// URI is the libvirt URI of the host's session daemon, over SSH:
// qemu+ssh://vbremote@ADDR/session?command=SSH&keyfile=KEY (of System's,
// qemu+ssh://root@ADDR/system?...).
func (r *Remote) URI() string { return r.uri }

// Addr is the host's address; User the SSH user of its helpers.
func (r *Remote) Addr() string { return r.addr }
func (r *Remote) User() string { return r.user }

// KeyFile is the private key the host accepts; KnownHosts the file with
// its host key; SSHCommand the ssh wrapper (the URI's command=) that reads
// that file, with BatchMode on.
func (r *Remote) KeyFile() string    { return filepath.Join(r.dir, "id_ed25519") }
func (r *Remote) KnownHosts() string { return filepath.Join(r.dir, "known_hosts") }
func (r *Remote) SSHCommand() string { return filepath.Join(r.dir, "ssh") }

// URIWith is the host's URI with query instead of the bed's own
// (command=... &keyfile=...): for tests of what SSH refuses.
func (r *Remote) URIWith(query string) string {
	base, _, _ := strings.Cut(r.uri, "?")
	if query == "" {
		return base
	}
	return base + "?" + query
}

// SSHWrapper writes an ssh wrapper into t's temporary folder that checks
// host keys against knownHosts (StrictHostKeyChecking, BatchMode): the
// command= of a URI for a test of host keys.
func (r *Remote) SSHWrapper(t testing.TB, knownHosts string) string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "ssh_config")
	body := fmt.Sprintf("UserKnownHostsFile %s\nStrictHostKeyChecking yes\nBatchMode yes\nConnectTimeout 5\n", knownHosts)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(dir, "ssh")
	if err := os.WriteFile(w, []byte("#!/bin/sh\nexec ssh -F "+conf+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// ssh runs a shell command line on the host as its user.
func (r *Remote) ssh(ctx context.Context, stdout io.Writer, line string) (string, error) {
	cmd := exec.CommandContext(ctx, r.SSHCommand(), "-i", r.KeyFile(), "-T", r.user+"@"+r.addr, line)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("on the remote host: %s: %w: %s", line, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// SSH runs a shell command line on the host as its user and returns what
// it printed; t fails if it fails.
func (r *Remote) SSH(t testing.TB, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := r.ssh(ctx, nil, line)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// virsh runs virsh on the host, through SSH.
func (r *Remote) virsh(t testing.TB, args ...string) string {
	t.Helper()
	line := "virsh -q -c " + r.local
	for _, a := range args {
		line += " " + shellQuote(a)
	}
	return r.SSH(t, line)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Domain makes and starts a TCG domain with no OS on the host, with disks
// DISK:FORMAT:SIZE (default vda:qcow2:64M) under ~/images/NAME there
// (System's: /var/lib/libvirt/images/NAME); t's cleanup destroys and
// undefines it.
func (r *Remote) Domain(t testing.TB, disks ...string) string {
	t.Helper()
	if len(disks) == 0 {
		disks = []string{"vda:qcow2:64M"}
	}
	name := fmt.Sprintf("vbr%d-%d", os.Getpid(), domainSeq.Add(1))
	dir := r.images + "/" + name
	var devs strings.Builder
	mk := "mkdir -p " + dir
	for _, spec := range disks {
		parts := strings.Split(spec, ":")
		if len(parts) != 3 {
			t.Fatalf("testbed: disk %q is not DISK:FORMAT:SIZE", spec)
		}
		img := dir + "/" + parts[0] + "." + parts[1]
		mk += " && qemu-img create -q -f " + parts[1] + " " + img + " " + parts[2]
		fmt.Fprintf(&devs, "<disk type='file' device='disk'><driver name='qemu' type='%s'/><source file='%s'/><target dev='%s' bus='virtio'/></disk>",
			parts[1], img, parts[0])
	}
	r.SSH(t, mk)
	xml := fmt.Sprintf("<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices>%s</devices></domain>",
		name, devs.String())
	r.SSH(t, "cat > "+dir+"/domain.xml <<'EOF'\n"+xml+"\nEOF\nvirsh -q -c "+r.local+" define "+dir+"/domain.xml >/dev/null && virsh -q -c "+r.local+" start "+name+" >/dev/null")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		v := "virsh -q -c " + r.local + " "
		_, _ = r.ssh(ctx, nil, v+"destroy "+name+" >/dev/null 2>&1; "+
			"for c in $("+v+"checkpoint-list --name "+name+" 2>/dev/null); do "+v+"checkpoint-delete "+name+" $c --metadata >/dev/null; done; "+
			v+"undefine "+name+" --checkpoints-metadata >/dev/null; rm -rf "+dir)
	})
	return name
}

// Write writes pattern at off for n bytes through the running domain's
// disk (its block backend, from the monitor), then flushes.
func (r *Remote) Write(t testing.TB, dom, disk string, pattern byte, off, n int64) {
	t.Helper()
	alias := "virtio-disk" + fmt.Sprint(int(disk[len(disk)-1]-'a'))
	cmd := fmt.Sprintf(`qemu-io -d /machine/peripheral/%s/virtio-backend "write -P 0x%02x %d %d"`, alias, pattern, off, n)
	out := r.virsh(t, "qemu-monitor-command", dom, "--hmp", cmd)
	if strings.TrimSpace(out) != "" {
		t.Fatalf("testbed: writing to %s %s on the remote host: %s", dom, disk, out)
	}
	r.virsh(t, "qemu-monitor-command", dom, "--hmp", fmt.Sprintf(`qemu-io -d /machine/peripheral/%s/virtio-backend "flush"`, alias))
}

// DiskSum is the SHA-256 of the raw content of a domain's disk, read
// through SSH: the domain is paused (QEMU flushes its metadata), the image
// converted to raw on the host and its bytes streamed here.
func (r *Remote) DiskSum(t testing.TB, dom, disk string) string {
	t.Helper()
	src := r.Image(t, dom, disk)
	r.virsh(t, "suspend", dom)
	defer r.virsh(t, "resume", dom)
	return r.imageSum(t, src, "-U")
}

// ImageSum is DiskSum of a shut-off domain: its image as it is on the
// host (no process may hold it for writing).
func (r *Remote) ImageSum(t testing.TB, dom, disk string) string {
	t.Helper()
	return r.imageSum(t, r.Image(t, dom, disk), "")
}

func (r *Remote) imageSum(t testing.TB, src, flag string) string {
	t.Helper()
	raw := fmt.Sprintf("/tmp/vbrsum-%d-%d.raw", os.Getpid(), domainSeq.Add(1))
	h := sha256.New()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := r.ssh(ctx, h, fmt.Sprintf("qemu-img convert %s -O raw %s %s && cat %s; rc=$?; rm -f %s; exit $rc", flag, shellQuote(src), raw, raw, raw)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Image is the path on the host of a domain's disk image.
func (r *Remote) Image(t testing.TB, dom, disk string) string {
	t.Helper()
	src := strings.TrimSpace(r.SSH(t, fmt.Sprintf("virsh -q -c %s domblklist %s | awk -v d=%s '$1==d {print $2}'", r.local, shellQuote(dom), shellQuote(disk))))
	if src == "" {
		t.Fatalf("testbed: domain %s has no disk %s on the remote host", dom, disk)
	}
	return src
}

// Stop stops the domain on the host (virsh destroy: there is no guest to
// shut down).
func (r *Remote) Stop(t testing.TB, dom string) {
	t.Helper()
	r.virsh(t, "destroy", dom)
}

// WriteImage writes pattern at off for n bytes into a shut-off domain's
// qcow2 image on the host, as a tool that opens the image itself does:
// QEMU's block layer updates its enabled bitmaps.
func (r *Remote) WriteImage(t testing.TB, dom, disk string, pattern byte, off, n int64) {
	t.Helper()
	r.SSH(t, fmt.Sprintf("qemu-io -f qcow2 -c %s %s >/dev/null", shellQuote(fmt.Sprintf("write -P 0x%02x %d %d", pattern, off, n)), shellQuote(r.Image(t, dom, disk))))
}

// Bitmaps lists the persistent bitmaps of a domain's qcow2 image on the
// host, in their order there.
func (r *Remote) Bitmaps(t testing.TB, dom, disk string) []string {
	t.Helper()
	out := r.SSH(t, "qemu-img info -U --output=json "+shellQuote(r.Image(t, dom, disk)))
	var info struct {
		Specific struct {
			Data struct {
				Bitmaps []struct{ Name string } `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("testbed: qemu-img info on the remote host: %v: %s", err, out)
	}
	var names []string
	for _, b := range info.Specific.Data.Bitmaps {
		names = append(names, b.Name)
	}
	return names
}

// Checkpoints lists the domain's checkpoints on the host.
func (r *Remote) Checkpoints(t testing.TB, dom string) []string {
	t.Helper()
	return strings.Fields(r.virsh(t, "checkpoint-list", "--name", dom))
}

// RawSum is the SHA-256 of a local image's raw content, to hold against
// DiskSum.
func RawSum(t testing.TB, image string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", image, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v: %s", image, err, out)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
