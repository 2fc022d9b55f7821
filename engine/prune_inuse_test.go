package engine

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
)

// pruneWith prunes dir and returns what the engine noted.
func pruneWith(t *testing.T, dir string, p Policy, dry bool) (Pruned, *lines) {
	t.Helper()
	l := &lines{}
	res, err := Prune(context.Background(), PruneRequest{Dir: dir, Policy: p, DryRun: dry, Now: time.Now}, l)
	if err != nil {
		t.Fatal(err)
	}
	return res, l
}

// prune keeps the whole chain an instant restore reads, and says why;
// once the overlay holds all its data (finished by hand with virsh
// blockpull), the record keeps nothing: a dry run says it would drop it,
// a prune drops it and removes what the policy does not keep.
func TestPruneKeepsInUse(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8},
		{day: "2026-10-30", off: 20, size: 4}, {day: "2026-10-31", off: 4, size: 4}})
	overlay := filepath.Join(t.TempDir(), "vda.qcow2")
	backing := filepath.Join(dir, names[2], "vda.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay)
	rec := chain.InUse{Domain: "vm2", Backup: names[2], Chain: names[:3], Disks: []chain.InUseDisk{{Name: "vda", Overlay: overlay, Backing: backing}}}
	if err := chain.WriteInUse(dir, rec); err != nil {
		t.Fatal(err)
	}

	res, _ := pruneWith(t, dir, Policy{Last: 1}, false)
	if got := verifyAll(t, dir); !slices.Equal(got, names) || len(res.Removed) != 0 {
		t.Fatalf("kept %v, removed %v; want all four kept", got, res.Removed)
	}
	for _, v := range res.Verdicts[:3] {
		if !v.Keep || !strings.Contains(strings.Join(v.Reasons, ", "), "in use: domain vm2 runs from it") {
			t.Errorf("backup %s: keep %v for %v", v.Backup.Name(), v.Keep, v.Reasons)
		}
	}

	run(t, "qemu-img", "rebase", "-q", "-f", "qcow2", "-b", "", overlay)
	_, l := pruneWith(t, dir, Policy{Last: 1}, true)
	if !strings.Contains(l.all(), "instant restore vm2 no longer reads from") {
		t.Errorf("the dry run does not say the record goes:\n%s", l.all())
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); !ok {
		t.Fatal("a dry run dropped the record")
	}
	res, l = pruneWith(t, dir, Policy{Last: 1}, false)
	if !strings.Contains(l.all(), "its record was dropped") || len(res.Removed) != 3 {
		t.Errorf("prune after the finish: removed %v\n%s", res.Removed, l.all())
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); ok {
		t.Fatal("the stale record is still there")
	}
	if got := verifyAll(t, dir); !slices.Equal(got, names[3:]) {
		t.Fatalf("kept %v", got)
	}
}
