package fetch

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/progress"
)

// These tests fetch from real NBD servers (qemu-nbd, nbdkit) and check
// the files with qemu-img. Where a tool is missing they skip, except
// under CI=true, where they fail.

// serve runs an NBD server (args hold SOCK for its Unix socket) until the
// returned stop, or the test's end, and returns the export's URI.
func serve(t testing.TB, export string, bin string, args ...string) (uri string, stop func()) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "SOCK", sock)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(stop)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not listening after 15s: %s", bin, &stderr)
		}
	}
	return "nbd+unix:///" + export + "?socket=" + sock, stop
}

// qemuNBD serves img read-only, to 16 clients at once (so with multi-conn).
func qemuNBD(t testing.TB, img string, args ...string) (string, func()) {
	return serve(t, "", "qemu-nbd", append([]string{"--socket=SOCK", "-t", "-e", "16", "-r", "-f", "qcow2"}, append(args, img)...)...)
}

// lastSample keeps the printer's last sample.
type lastSample struct {
	mu sync.Mutex
	s  progress.Sample
}

func (p *lastSample) Update(s progress.Sample) { p.mu.Lock(); p.s = s; p.mu.Unlock() }
func (p *lastSample) Finish(progress.Result)   {}

func fetchOne(t *testing.T, d Disk) DiskResult {
	t.Helper()
	p := &lastSample{}
	res, err := Run(context.Background(), []Disk{d}, Options{Printer: p})
	if err != nil {
		t.Fatal(err)
	}
	if s := p.s.Disks[0]; s.Done != s.Total || s.Total == 0 {
		t.Errorf("%s: progress ended at %d of %d", d.Path, s.Done, s.Total)
	}
	return res.Disks[0]
}

func compare(t *testing.T, img, out, format string) {
	t.Helper()
	if format == "qcow2" {
		if o := testbed.Run(t, "qemu-img", "check", out); !strings.Contains(o, "No errors were found") {
			t.Fatalf("qemu-img check %s: %s", out, o)
		}
	}
	testbed.Run(t, "qemu-img", "compare", "-U", "-f", "qcow2", "-F", format, img, out)
}

// A full fetch into raw and qcow2 files, then an incremental into a qcow2
// over the full one (named relative to its folder): each reads as the
// disk did. The disk's size is not a whole number of clusters, and its
// writes straddle clusters and a 512 MiB L2 region.
func TestFetchFullAndIncremental(t *testing.T) {
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	const size = 1<<30 + 1536
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1073743360")
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1000 5000", "-c", "write -P 0x22 100M 3M",
		"-c", "write -P 0x33 511M 2M", "-c", "write -z 200M 1M", "-c", "write -P 0x55 300M 1M",
		"-c", "write -z 300M 128k", "-c", "write -P 0x44 1G 1536", img)

	uri, stop := qemuNBD(t, img)
	src, err := openSource(context.Background(), uri, []string{baseAllocation}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(src.conns) != 4 {
		t.Errorf("%d connections to a multi-conn export, want 4", len(src.conns))
	}
	src.close()
	for _, format := range []string{"raw", "qcow2"} {
		out := filepath.Join(dir, "full."+format)
		r := fetchOne(t, Disk{Name: "vda", URI: uri, Path: out, Format: format})
		compare(t, img, out, format)
		if r.Size != size || r.Zeroed != 0 {
			t.Errorf("%s: %+v", format, r)
		}
	}
	stop()

	testbed.Run(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x66 2000 100", "-c", "write -z 100M 64k",
		"-c", "write -P 0x77 700M 64k", "-c", "write -P 0x88 1073742336 512", img)
	uri, _ = qemuNBD(t, img, "-B", "b0")
	out := filepath.Join(dir, "inc.qcow2")
	r := fetchOne(t, Disk{Name: "vda", URI: uri, Bitmap: "qemu:dirty-bitmap:b0", Path: out, Format: "qcow2", Backing: "full.qcow2"})
	compare(t, img, out, "qcow2")
	if want := (DiskResult{Name: "vda", Path: out, Size: size, Copied: 2<<16 + 1536, Zeroed: 1 << 16, Extents: 4}); !reflect.DeepEqual(r, want) {
		t.Errorf("incremental: %+v, want %+v", r, want)
	}
	if info := testbed.Run(t, "qemu-img", "info", "-U", out); !strings.Contains(info, "backing file: full.qcow2") {
		t.Errorf("the overlay's backing file is not recorded as given:\n%s", info)
	}
}

// A fetch that fails leaves neither the file nor a .partial.
func TestFetchFailureLeavesNothing(t *testing.T) {
	testbed.Need(t, "nbdkit")
	uri, _ := serve(t, "vda", "nbdkit", "-f", "--exit-with-parent", "-U", "SOCK", "--filter=error", "pattern", "size=64M",
		"error-pread=EIO", "error-pread-rate=1")
	for _, format := range []string{"raw", "qcow2"} {
		dir := t.TempDir()
		_, err := Run(context.Background(), []Disk{{Name: "vda", URI: uri, Path: filepath.Join(dir, "vda."+format), Format: format}}, Options{})
		if err == nil || !strings.Contains(err.Error(), "disk vda") || !strings.Contains(err.Error(), "EIO") {
			t.Errorf("%s: fetch from a failing disk: %v; want EIO for disk vda", format, err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("%s: left behind: %s", format, entries[0].Name())
		}
	}
}
