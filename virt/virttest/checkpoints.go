package virttest

import (
	"context"
	"strings"
	"testing"

	"vbackup/virt"
)

var bg = context.Background()

// checkpointRules asserts how checkpoints hang together: the current
// checkpoint (the next one's parent) as deletion and redefinition move it,
// the disks a checkpoint covers, and what libvirt refuses.
func checkpointRules(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("DeleteMiddleCheckpoint", func(t *testing.T) {
		dom := domain(t, fresh(t))
		create(t, dom, "c1", "c2", "c3")
		if err := dom.DeleteCheckpoint(bg, "c2", virt.DeleteFlags{}); err != nil {
			t.Fatal(err)
		}
		// Its child moves up to its parent; the current one stays.
		if p := parentOf(t, dom, "c3"); p != "c1" {
			t.Fatalf("after deleting c2, c3's parent = %q; want c1", p)
		}
		create(t, dom, "c4")
		if p := parentOf(t, dom, "c4"); p != "c3" {
			t.Fatalf("c4's parent = %q; want c3 (still current)", p)
		}
		// Deleting the current one makes its parent current.
		if err := dom.DeleteCheckpoint(bg, "c4", virt.DeleteFlags{}); err != nil {
			t.Fatal(err)
		}
		create(t, dom, "c5")
		if p := parentOf(t, dom, "c5"); p != "c3" {
			t.Fatalf("after deleting the current c4, c5's parent = %q; want c3", p)
		}
		// Deleting the children of one below the current makes it current.
		if err := dom.DeleteCheckpoint(bg, "c3", virt.DeleteFlags{ChildrenOnly: true}); err != nil {
			t.Fatal(err)
		}
		create(t, dom, "c6")
		if p := parentOf(t, dom, "c6"); p != "c3" {
			t.Fatalf("after deleting c3's children, c6's parent = %q; want c3", p)
		}
		if err := dom.DeleteCheckpoint(bg, "c1", virt.DeleteFlags{Children: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom)
	})

	t.Run("RedefineAndCurrent", func(t *testing.T) {
		dom := domain(t, fresh(t))
		create(t, dom, "c1", "c2")
		c1, err := dom.CheckpointXML(bg, "c1", virt.XMLFlags{})
		if err != nil {
			t.Fatal(err)
		}
		c2, err := dom.CheckpointXML(bg, "c2", virt.XMLFlags{})
		if err != nil {
			t.Fatal(err)
		}
		// Forgetting the current c2 makes c1 current; c2 redefined under
		// the current one becomes current again.
		if err := dom.DeleteCheckpoint(bg, "c2", virt.DeleteFlags{MetadataOnly: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := dom.CreateCheckpoint(bg, c2, virt.CreateFlags{Redefine: true}); err != nil {
			t.Fatalf("redefine c2: %v", err)
		}
		create(t, dom, "c3")
		if p := parentOf(t, dom, "c3"); p != "c2" {
			t.Fatalf("c3's parent = %q; want c2 (redefined under the current c1, so current)", p)
		}
		// Redefining one that is not under the current one leaves it.
		if _, err := dom.CreateCheckpoint(bg, c1, virt.CreateFlags{Redefine: true}); err != nil {
			t.Fatalf("redefine c1: %v", err)
		}
		create(t, dom, "c4")
		if p := parentOf(t, dom, "c4"); p != "c3" {
			t.Fatalf("c4's parent = %q; want c3 (redefining c1 does not make it current)", p)
		}
		orphan := strings.Replace(strings.Replace(c2, "<name>c2</name>", "<name>c9</name>", 1), "<name>c1</name>", "<name>gone</name>", 1)
		_, err = dom.CreateCheckpoint(bg, orphan, virt.CreateFlags{Redefine: true})
		wantErr(t, "redefine under an unknown parent", err, virt.ErrInvalidArg, "gone", "not found")
		own := strings.Replace(c2, "<name>c1</name>", "<name>c2</name>", 1)
		_, err = dom.CreateCheckpoint(bg, own, virt.CreateFlags{Redefine: true})
		wantErr(t, "redefine as its own parent", err, virt.ErrInvalidArg, "own parent")
		if err := dom.DeleteCheckpoint(bg, "c1", virt.DeleteFlags{Children: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom)
	})

	t.Run("DuplicateCheckpoint", func(t *testing.T) {
		dom := domain(t, fresh(t))
		if _, err := dom.CreateCheckpoint(bg, checkpointXML("c1", "first"), virt.CreateFlags{}); err != nil {
			t.Fatal(err)
		}
		// libvirt says VIR_ERR_OPERATION_FAILED, which has no kind: not
		// virt.ErrCheckpointExists.
		_, err := dom.CreateCheckpoint(bg, checkpointXML("c1", "second"), virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint of a second c1", err, nil, "c1 already exists")
		if cp, err := dom.Checkpoint(bg, "c1"); err != nil || cp.Description != "first" {
			t.Fatalf("c1 = %+v, %v; want the first one", cp, err)
		}
		assertNames(t, dom, "c1")
	})

	t.Run("CheckpointDiskDefaults", func(t *testing.T) {
		dom := domain(t, fresh(t))
		// A disk listed without an attribute gets a bitmap named after the
		// checkpoint; once one disk is listed, the others get none.
		doc := "<domaincheckpoint><name>d1</name><disks><disk name='vda'/></disks></domaincheckpoint>"
		if _, err := dom.CreateCheckpoint(bg, doc, virt.CreateFlags{}); err != nil {
			t.Fatal(err)
		}
		cp, err := dom.Checkpoint(bg, "d1")
		if err != nil {
			t.Fatal(err)
		}
		want := []virt.CheckpointDisk{{Name: "vda", Checkpoint: "bitmap", Bitmap: "d1"}, {Name: "vdb", Checkpoint: "no"}}
		if len(cp.Disks) != 2 || cp.Disks[0] != want[0] || cp.Disks[1] != want[1] {
			t.Fatalf("disks = %+v; want %+v", cp.Disks, want)
		}
		_, err = dom.CreateCheckpoint(bg, "<domaincheckpoint><name>bad", virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint of broken XML", err, virt.ErrXML)
		assertNames(t, dom, "d1")
	})

	t.Run("QEMURefusesCheckpoints", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		if testDriver(s) {
			t.Log("the test driver keeps bitmaps on any disk and takes any flag: nothing to refuse")
			return
		}
		// Listing no disk asks for a bitmap on each, and vdb is raw.
		_, err := dom.CreateCheckpoint(bg, "<domaincheckpoint><name>r1</name></domaincheckpoint>", virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint of all disks", err, virt.ErrInvalidArg, "vdb", "raw")
		_, err = dom.CreateCheckpoint(bg, "<domaincheckpoint><name>r2</name><disks><disk name='vdb' checkpoint='bitmap'/></disks></domaincheckpoint>", virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint with a bitmap on raw vdb", err, virt.ErrInvalidArg, "vdb", "raw")
		_, err = dom.CreateCheckpoint(bg, "<domaincheckpoint><name>r3</name><disks><disk name='vda' checkpoint='bitmap' bitmap='other'/></disks></domaincheckpoint>", virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint with a bitmap not named after it", err, virt.ErrInvalidArg, "must match checkpoint name")
		_, err = dom.CreateCheckpoint(bg, checkpointXML("r4", ""), virt.CreateFlags{Quiesce: true})
		wantErr(t, "CreateCheckpoint with Quiesce", err, virt.ErrInvalidArg, "unsupported flags")
		assertNames(t, dom)
	})
}
