package contentsum

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/qemunbd"
)

func run(t testing.TB, bin string, args ...string) []byte {
	t.Helper()
	testbed.Need(t, bin)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return out
}

// qemuIO runs qemu-io commands on a qcow2 image.
func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	run(t, "qemu-io", append(args, img)...)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// serve serves img with qemu-nbd for the test and returns its URI.
func serve(t testing.TB, img, format string) string {
	t.Helper()
	testbed.Need(t, "qemu-nbd")
	srv, err := qemunbd.Serve(testCtx(t), img, format)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.URI()
}

// reference is the checksum of the raw conversion of an image, by
// OfReader.
func reference(t testing.TB, img, format string) Sum {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "flat.raw")
	run(t, "qemu-img", "convert", "-f", format, "-O", "raw", img, raw)
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := OfReader(f, uint64(fi.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// chainSize is 7 MiB and a partial chunk of 64 KiB + 512 bytes.
const chainSize = 7*mib + 64<<10 + 512

// chain makes a qcow2 overlay over a qcow2 base with, chunk by chunk:
// 0 data in the base; 1 the base's data, and the top's over part of it;
// 2 a hole in both; 3 the base's data, half masked by zeroes in the top;
// 4 zeroes over a hole; 5 the base's data, all masked by zeroes; 6 a hole;
// 7 (partial) data in its last 512 bytes.
func chain(t testing.TB) (top string) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, fmt.Sprint(chainSize))
	qemuIO(t, base, "write -P 0x11 0 2M", "write -P 0x22 3M 1M", "write -P 0x55 5M 1M")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	qemuIO(t, top, "write -P 0x33 1536K 64K", "write -z 3M 512K", "write -z 4M 1M", "write -z 5M 1M",
		fmt.Sprintf("write -P 0x44 %d 512", chainSize-512))
	return top
}

func TestFileChain(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	top := chain(t)
	want := reference(t, top, "qcow2")
	if want.Size != chainSize {
		t.Fatalf("the raw conversion has %d bytes, want %d", want.Size, chainSize)
	}
	var last, calls uint64
	progress := func(done, total uint64) {
		if done <= last || total != chainSize {
			t.Errorf("progress %d of %d after %d", done, total, last)
		}
		last = done
		calls++
	}
	for _, opts := range []Options{{Progress: progress}, {Connections: 1, InFlight: 1}, {Connections: 8, InFlight: 64}} {
		got, err := File(testCtx(t), top, "qcow2", opts)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(want) || got.Size != chainSize {
			t.Errorf("%+v: File = %v (size %d), want %v (size %d)", opts, got, got.Size, want, want.Size)
		}
	}
	if last != chainSize || calls < 3 {
		t.Errorf("progress ended at %d after %d calls, want %d", last, calls, chainSize)
	}
}

// What reads as zeroes is not read: of the chain's 8 chunks, 2, 4, 5, 6
// and the second half of 3.
func TestExportSkipsZeroes(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	top := chain(t)
	srv := serve(t, top, "qcow2")
	_, read, err := export(testCtx(t), srv, top, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read %d of %d bytes", read, chainSize)
	if max := uint64(chainSize - 4*mib - mib/2); read == 0 || read > max {
		t.Errorf("read %d bytes, want at most %d", read, max)
	}
}

func TestFileRawHoles(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	const size = 5*mib + 4096
	for _, w := range []struct {
		off int64
		b   []byte
	}{{0, []byte("boot")}, {mib + 300, []byte(strings.Repeat("x", 70000))}, {4*mib + 1000, []byte("end")}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	want, err := OfReader(f, size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	for _, img := range []struct{ path, format string }{{raw, "raw"}, {qcow, "qcow2"}} {
		got, err := File(testCtx(t), img.path, img.format, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(want) || got.Size != size {
			t.Errorf("%s: File = %v (size %d), want %v (size %d)", img.format, got, got.Size, want, size)
		}
	}
}

// Rot in an overlay's data, behind QEMU's back, changes the sum.
func TestFileFlippedByte(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	top := chain(t)
	before, err := File(testCtx(t), top, "qcow2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var m []struct {
		Depth  int
		Data   bool
		Offset *int64
	}
	if err := json.Unmarshal(run(t, "qemu-img", "map", "--output=json", "-f", "qcow2", top), &m); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(top, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flipped := false
	for _, e := range m {
		if e.Depth == 0 && e.Data && e.Offset != nil {
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, *e.Offset+100); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x01
			if _, err := f.WriteAt(b, *e.Offset+100); err != nil {
				t.Fatal(err)
			}
			flipped = true
			break
		}
	}
	if !flipped {
		t.Fatalf("qemu-img map shows no data in the top: %+v", m)
	}
	after, err := File(testCtx(t), top, "qcow2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Equal(before) {
		t.Errorf("flipping a bit of the top's data left the sum at %v", before)
	}
	if want := reference(t, top, "qcow2"); !after.Equal(want) {
		t.Errorf("after the flip, File = %v, want %v", after, want)
	}
}

func TestFileErrors(t *testing.T) {
	testbed.Need(t, "qemu-nbd")
	missing := filepath.Join(t.TempDir(), "missing.qcow2")
	_, err := File(testCtx(t), missing, "qcow2", Options{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("File of a missing image: %v; want ErrNotExist naming %s", err, missing)
	}

	img := filepath.Join(t.TempDir(), "big.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	qemuIO(t, img, "write -P 0x77 0 64M")
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	_, err = File(ctx, img, "qcow2", Options{Progress: func(done, total uint64) { cancel() }})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), "offset") {
		t.Errorf("File cancelled midway: %v; want Canceled naming %s and an offset", err, img)
	}
	t.Log(err)

	_, err = Export(testCtx(t), "nbd+unix:///?socket="+missing, Options{})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Export of a missing socket: %v", err)
	}
}
