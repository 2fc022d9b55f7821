package commands

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
)

// Two folders of one domain, backed up within the same second (the local
// folder's checkpoint of that second already pruned when the offsite one
// is made, the collision): each folder keeps its own chain, every
// next backup is incremental, and each point restores to the disk as it
// was. Neither folder's pruning deletes the other's checkpoint.
func TestBackupTwoFoldersSameSecond(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	local, offsite := filepath.Join(t.TempDir(), "local"), filepath.Join(t.TempDir(), "offsite")
	t0 := time.Now().UTC().Truncate(time.Second)
	points := map[string]map[string]string{} // backup name -> disk sums

	step := func(dir string, second int, pattern byte) *chain.Backup {
		t.Helper()
		bed.Write(t, dom, "vda", pattern, int64(pattern%32)<<20, 1<<20)
		r := vbAt(t, open, t0.Add(time.Duration(second)*time.Second), "backup", dom, "--to", dir)
		wantCode(t, r, ExitOK)
		all := storeBackups(t, dir)
		last := all[len(all)-1]
		points[last.Name()] = sourceSums(t, bed, dom, "vda")
		return last
	}
	l1 := step(local, 0, 1)
	l2 := step(local, 1, 2)
	o1 := step(offsite, 0, 3)
	if l1.Name() == o1.Name() || l1.Folder == o1.Folder {
		t.Fatalf("the two folders' first backups are %s (folder %s) and %s (folder %s): want names and identities of their own",
			l1.Name(), l1.Folder, o1.Name(), o1.Folder)
	}
	l3 := step(local, 2, 4)
	cps := checkpointNames(t, bed, dom)
	if !slices.Contains(cps, o1.Name()) {
		t.Fatalf("the local folder's backup deleted the offsite folder's checkpoint %s: libvirt has %v", o1.Name(), cps)
	}
	o2 := step(offsite, 3, 5)
	for _, c := range []struct{ next, last *chain.Backup }{{l2, l1}, {l3, l2}, {o2, o1}} {
		if d := c.next.Disks[0]; c.next.Level != chain.Incremental || d.Backing != c.last.Name() {
			t.Errorf("backup %s: %s on %q; want an incremental on %s", c.next.Name(), c.next.Level, d.Backing, c.last.Name())
		}
	}
	if cps := checkpointNames(t, bed, dom); len(cps) != 2 || !slices.Contains(cps, l3.Name()) || !slices.Contains(cps, o2.Name()) {
		t.Errorf("libvirt's checkpoints: %v; want each folder's newest, %s and %s", cps, l3.Name(), o2.Name())
	}
	for _, dir := range []string{local, offsite} {
		wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
		for _, b := range storeBackups(t, dir) {
			if got := restoredSums(t, open, dir, b.Name(), "vda")["vda"]; got != points[b.Name()]["vda"] {
				t.Errorf("%s restored at %s: %s, the disk was %s", dir, b.Name(), got, points[b.Name()]["vda"])
			}
		}
	}
}

// checkpointNames lists a domain's checkpoints through virsh.
func checkpointNames(t *testing.T, bed interface {
	Virsh(testing.TB, ...string) string
}, dom string) []string {
	t.Helper()
	return strings.Fields(bed.Virsh(t, "checkpoint-list", dom, "--name"))
}
