package engine

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
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

// An overlay that cannot be looked at (here a loop of symbolic links:
// ELOOP, not "no such file") is not an overlay gone: the record keeps its
// backups, and the prune says why.
func TestPruneKeepsUnreadableOverlay(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8},
		{day: "2026-10-30", off: 20, size: 4}})
	loop := filepath.Join(t.TempDir(), "a")
	if err := os.Symlink(loop+"b", loop); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(loop, loop+"b"); err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(dir, names[1], "vda.qcow2")
	rec := chain.InUse{Domain: "vm2", Backup: names[1], Chain: names[:2], Disks: []chain.InUseDisk{{Name: "vda", Overlay: loop, Backing: backing}}}
	if err := chain.WriteInUse(dir, rec); err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{true, false} {
		res, l := pruneWith(t, dir, Policy{Last: 1}, dry)
		if len(res.Removed) != 0 || !res.Verdicts[0].Keep || !res.Verdicts[1].Keep {
			t.Errorf("dry %v: removed %v from under an overlay that cannot be looked at", dry, res.Removed)
		}
		if !strings.Contains(l.all(), "note: instant restore vm2: its overlay "+loop+" cannot be looked at") ||
			!strings.Contains(l.all(), "its record and the backups it reads are kept") {
			t.Errorf("dry %v: the prune does not say why it keeps the record:\n%s", dry, l.all())
		}
		if _, ok, _ := chain.FindInUse(dir, "vm2"); !ok {
			t.Fatalf("dry %v: the record of an overlay that cannot be looked at was dropped", dry)
		}
	}
	if got := verifyAll(t, dir); !slices.Equal(got, names) {
		t.Fatalf("kept %v", got)
	}
}

// A prune refused (a backup two later ones build on) changes nothing: a
// stale record is still there, and so is the ACL entry it granted.
func TestRefusedPruneKeepsRecord(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8}})
	names = append(names, addIncremental(t, dir, "2026-10-30", names[0]))
	img := filepath.Join(dir, names[0], "vda.qcow2")
	if err := os.Chmod(img, 0o600); err != nil { // private, as backups are
		t.Fatal(err)
	}
	g, ok, err := account{uid: 4242, gids: []int{4242}, name: "4242"}.grant(img, permRead)
	if err != nil || !ok {
		t.Fatalf("granting uid 4242 read access to %s: %v, %v", img, ok, err)
	}
	rec := chain.InUse{Domain: "vm2", Backup: names[0], Chain: names[:1], Grants: []chain.Grant{g},
		Disks: []chain.InUseDisk{{Name: "vda", Overlay: filepath.Join(t.TempDir(), "gone.qcow2"), Backing: img}}}
	if err := chain.WriteInUse(dir, rec); err != nil {
		t.Fatal(err)
	}
	_, err = Prune(context.Background(), PruneRequest{Dir: dir, Policy: Policy{Last: 1}, Now: time.Now}, &lines{})
	if err == nil || !strings.Contains(err.Error(), "is the base of 2 later backups") {
		t.Fatalf("prune of a backup two later ones build on: %v", err)
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); !ok {
		t.Error("a refused prune dropped the record")
	}
	if may, err := (account{uid: 4242, gids: []int{4242}}).may(img, permRead); err != nil || !may {
		t.Errorf("a refused prune took back the grant on %s (may read: %v, %v)", img, may, err)
	}
	if got := verifyAll(t, dir); !slices.Equal(got, names) {
		t.Fatalf("kept %v", got)
	}
}

// addIncremental adds to dir a backup on day whose disk vda builds on
// backup base's, and returns its name.
func addIncremental(t *testing.T, dir, day, base string) string {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	when, err := time.Parse(time.DateOnly, day)
	if err != nil {
		t.Fatal(err)
	}
	when = when.Add(time.Hour)
	name := "vbackup-" + when.Format("20060102T150405Z")
	pend, err := store.Begin(name)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(pend.Dir(), "vda.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "../"+base+"/vda.qcow2", img)
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x77 30M 2M", img)
	sum, err := contentsum.File(context.Background(), img, "qcow2", contentsum.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := chain.Manifest{Time: when, Level: chain.Incremental, Mode: "pull",
		Domain:     chain.Domain{Name: "vm1", UUID: "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"},
		Checkpoint: chain.Checkpoint{Name: name},
		Disks: []chain.Disk{{Name: "vda", File: "vda.qcow2", Format: "qcow2", Level: chain.Incremental, Backing: base, Bitmap: true,
			VirtualSize: sum.Size, Checksum: sum.String()}}}
	if _, err := pend.Commit(m); err != nil {
		t.Fatal(err)
	}
	return name
}
