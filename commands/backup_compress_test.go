package commands

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// A chain of compressed backups (a zstd full, a zlib incremental) is read
// by qemu-img as it is, verifies, and restores to the domain's disks.
func TestBackupCompressed(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	bed.Write(t, dom, "vda", 0x5a, 0, 16<<20)
	bed.Write(t, dom, "vdb", 0x33, 1<<20, 2<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir, "--compress", "zstd"), ExitOK)
	bed.Write(t, dom, "vda", 0x6b, 30<<20, 4<<20)
	r := vb(t, open, "backup", dom, "--to", dir, "--compress", "zlib")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "incremental") {
		t.Fatalf("the second backup is not incremental:\n%s", r.stdout)
	}
	want := sourceSums(t, bed, dom, "vda", "vdb")
	backups := storeBackups(t, dir)
	for i, kind := range []string{"zstd", "zlib"} {
		img := backups[i].File(backups[i].Disks[0])
		var info struct {
			Format map[string]any `json:"format-specific"`
			Size   int64          `json:"actual-size"`
		}
		if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "-U", "--output=json", img)), &info); err != nil {
			t.Fatal(err)
		}
		data, _ := info.Format["data"].(map[string]any)
		if data["compression-type"] != kind {
			t.Errorf("%s: compression type %v, want %s", img, data["compression-type"], kind)
		}
		// A plain image says zlib too (qcow2's default): its clusters tell.
		var check struct {
			Compressed int `json:"compressed-clusters"`
		}
		if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "check", "-U", "--output=json", img)), &check); err != nil || check.Compressed == 0 {
			t.Errorf("%s: %d compressed clusters (%v)", img, check.Compressed, err)
		}
		// 16 MiB of one repeated byte takes a few hundred KiB compressed.
		if fi, err := os.Stat(img); err == nil && i == 0 && fi.Size() > 4<<20 {
			t.Errorf("%s takes %d bytes for 16 MiB of a repeated byte: not compressed", img, fi.Size())
		}
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	got := restoredSums(t, open, dir, "latest", "vda", "vdb")
	for _, d := range []string{"vda", "vdb"} {
		if got[d] != want[d] {
			t.Errorf("disk %s restores to %s, the domain's is %s", d, got[d], want[d])
		}
	}
}

// --max-chain N: once the chain has N incrementals, the next backup is a
// full one, and says why.
func TestBackupMaxChain(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	dir := filepath.Join(t.TempDir(), "backups")
	for i := 0; i < 3; i++ {
		bed.Write(t, dom, "vda", byte(0x40+i), int64(i)<<20, 1<<20)
		r := vb(t, open, "backup", dom, "--to", dir, "--max-chain", "1")
		wantCode(t, r, ExitOK)
		if i == 2 && !strings.Contains(r.stdout, ": full (1 incremental since the last full backup, as many as --max-chain 1 allows)") {
			t.Errorf("the third backup does not say why it is full:\n%s", r.stdout)
		}
	}
	if got, want := strings.Join(backupLevels(t, dir), "|"), "full: vda=full|incremental: vda=incremental|full: vda=full"; got != want {
		t.Errorf("levels %s, want %s", got, want)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
}

// A disk that grows between two backups: the incremental after it reads
// the whole disk once and says why, and keeps every chunk's digest, so
// that the ones after it read only what changed again.
func TestBackupAfterResize(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x21, 0, 4<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	bed.Virsh(t, "blockresize", dom, "vda", "80M")
	bed.Write(t, dom, "vda", 0x22, 70<<20, 1<<20)
	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "disk vda changed size since backup")
	for i := 0; i < 2; i++ {
		bed.Write(t, dom, "vda", byte(0x23+i), int64(10+i)<<20, 1<<20)
		r = vb(t, open, "backup", dom, "--to", dir)
		wantCode(t, r, ExitOK)
		if strings.Contains(r.stderr, "reading all") {
			t.Errorf("backup %d after the resize read all of the disk again:\n%s", i+3, r.stderr)
		}
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	want := sourceSums(t, bed, dom, "vda")
	if got := restoredSums(t, open, dir, "latest", "vda"); got["vda"] != want["vda"] {
		t.Errorf("restores to %s, the domain's is %s", got["vda"], want["vda"])
	}
}
