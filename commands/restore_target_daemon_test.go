package commands

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// allocated is the space a file takes on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// randomFile writes size random bytes at path.
func randomFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// The proof that restored images are thin: a 1 TiB disk holding
// 64 MiB restores, as qcow2 and as raw, into files that take about 64 MiB.
func TestRestoreThinTiB(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:1T")
	bed.Write(t, dom, "vda", 0x5a, 1<<30, 64<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	for _, format := range []string{"qcow2", "raw"} {
		out := filepath.Join(t.TempDir(), format)
		wantCode(t, vb(t, open, "restore", "--from", dir, "--to", out, "--format", format), ExitOK)
		img := filepath.Join(out, "vda."+format)
		if used := allocated(t, img); used > 80<<20 || used < 64<<20 {
			t.Errorf("%s restore of a 1 TiB disk holding 64 MiB takes %d bytes", format, used)
		}
		if fi, _ := os.Stat(img); format == "raw" && fi.Size() != 1<<40 {
			t.Errorf("the raw image is %d bytes long, want 1 TiB", fi.Size())
		}
	}
}

// --disk NAME=TARGET writes a disk onto a file or a block device that
// exists: checked against the manifest, holes punched where the disk reads
// zeroes, what lies past the disk's end left alone; a target smaller than
// the disk is refused before anything is written.
func TestRestoreOntoTargets(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	bed.Write(t, dom, "vda", 0x31, 4<<20, 2<<20)
	bed.Write(t, dom, "vdb", 0x32, 1<<20, 1<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	point := sourceSums(t, bed, dom, "vda", "vdb")
	tmp := t.TempDir()

	small := filepath.Join(tmp, "small.raw")
	before := randomFile(t, small, 32<<20)
	r := vb(t, open, "restore", "--from", dir, "--disk", "vda="+small)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--disk vda="+small+": the target holds 32.000 MiB", "less than disk vda's 64.000 MiB", "nothing was written")
	if after, _ := os.ReadFile(small); !bytes.Equal(after, before) {
		t.Fatal("a refused target was written")
	}

	file := filepath.Join(tmp, "vda.raw")
	old := randomFile(t, file, 68<<20) // 4 MiB past the disk's end
	dev := filepath.Join(tmp, "vdb.img")
	randomFile(t, dev, 16<<20)
	loop, err := exec.Command("losetup", "--find", "--show", dev).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loopDev := strings.TrimSpace(string(loop))
	t.Cleanup(func() { exec.Command("losetup", "-d", loopDev).Run() })

	r = vb(t, open, "restore", "--from", dir, "--disk", "vda="+file, "--disk", "vdb="+loopDev)
	wantCode(t, r, ExitOK)
	for _, want := range []string{"vda    -> " + file, "vdb    -> " + loopDev, "content checksum matches the manifest"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	wantStderr(t, r, "4.000 MiB larger than disk vda")
	got, _ := os.ReadFile(file)
	if !bytes.Equal(got[64<<20:], old[64<<20:]) {
		t.Error("the bytes past the disk's end were changed")
	}
	disk := filepath.Join(tmp, "disk.raw")
	os.WriteFile(disk, got[:64<<20], 0o600)
	if s := fileSum(t, disk); s != point["vda"] {
		t.Errorf("vda on its target reads %s, want %s", s, point["vda"])
	}
	if used := allocated(t, file); used > 12<<20 {
		t.Errorf("the target file takes %d bytes: the disk's holes were written, not punched", used)
	}
	exec.Command("losetup", "-d", loopDev).Run()
	if s := fileSum(t, dev); s != point["vdb"] {
		t.Errorf("vdb on its block device reads %s, want %s", s, point["vdb"])
	}
}
