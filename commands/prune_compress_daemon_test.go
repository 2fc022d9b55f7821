package commands

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// A folder of compressed backups stays compressed as prune merges: the
// oldest full taken into the next point, then a middle point up into the
// newest. Every kept point verifies and restores to the domain's disk as
// it was, qemu-img finds its image clean and compressed, and it takes the
// space of compressed data (qemu-img commit and rebase would have stored
// the data they move as it is: tens of MiB here).
func TestPruneKeepsCompression(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	dir := filepath.Join(t.TempDir(), "backups")
	days := []time.Time{
		time.Date(2026, 10, 30, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 31, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC),
	}
	var points []map[string]string
	for i, day := range days {
		bed.Write(t, dom, "vda", byte(0x40+i), int64(i*8)<<20, 16<<20) // each overwrites half of the one before
		wantCode(t, vbAt(t, open, day, "backup", dom, "--to", dir, "--compress", "zstd"), ExitOK)
		points = append(points, sourceSums(t, bed, dom, "vda"))
	}
	var names []string
	for _, b := range storeBackups(t, dir) {
		names = append(names, b.Name())
	}

	r := vb(t, open, "prune", "--from", dir, "--keep-last", "3")
	wantCode(t, r, ExitOK)
	if strings.Contains(r.stderr, "instead") {
		t.Errorf("prune fell back to qemu-img:\n%s", r.stderr)
	}
	r = vb(t, open, "prune", "--from", dir, "--keep-monthly", "2")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "goes up into "+names[3]) || strings.Contains(r.stderr, "instead") {
		t.Errorf("the middle point's prune:\n%s\n%s", r.stdout, r.stderr)
	}
	kept := storeBackups(t, dir)
	if len(kept) != 2 || kept[0].Name() != names[1] || kept[1].Name() != names[3] {
		t.Fatalf("kept %v, want %s and %s", kept, names[1], names[3])
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	for i, b := range map[int]string{1: names[1], 3: names[3]} {
		if got := restoredSums(t, open, dir, b, "vda"); got["vda"] != points[i]["vda"] {
			t.Errorf("backup %s restores to %s, the domain's was %s", b, got["vda"], points[i]["vda"])
		}
	}
	for _, b := range kept {
		img := b.File(b.Disks[0])
		var check struct {
			Compressed int `json:"compressed-clusters"`
			Leaks      int `json:"leaks"`
		}
		// qemu-img check exits non-zero on any error or leak.
		if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "check", "--output=json", img)), &check); err != nil || check.Compressed == 0 {
			t.Errorf("%s: %d compressed clusters (%v)", img, check.Compressed, err)
		}
		// Each holds 24 or 40 MiB of data, repeated bytes: a few hundred KiB
		// compressed (du's count of the blocks the file takes).
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil || st.Blocks*512 > 2<<20 {
			t.Errorf("%s takes %d bytes: the data merged into it is not compressed (%v)", img, st.Blocks*512, err)
		}
	}
}
