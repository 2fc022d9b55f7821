// Package virttest is the conformance suite of virt.Conn: the same
// behaviour is asserted of every implementation (libvirt's test driver, a
// real libvirtd + QEMU), so that none drifts from what libvirt does.
package virttest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"vbackup/virt"
)

// Subject is one implementation under test: a connection and a running
// domain on it whose disks are vda (qcow2) and vdb (raw), with no checkpoint.
type Subject struct {
	Conn   virt.Conn
	Domain string
	// Size reports whether the implementation fills in bitmap sizes for
	// XMLFlags.Size (the test driver ignores the flag).
	Size bool
}

// Run runs the suite; fresh returns a new Subject for each subtest.
func Run(t *testing.T, fresh func(t *testing.T) Subject) {
	ctx := context.Background()

	t.Run("UnknownDomain", func(t *testing.T) {
		s := fresh(t)
		_, err := s.Conn.Domain(ctx, "no-such-domain")
		if !errors.Is(err, virt.ErrNoDomain) {
			t.Fatalf("Domain(no-such-domain) = %v, want ErrNoDomain", err)
		}
		if strings.Contains(err.Error(), "virError") {
			t.Errorf("error leaks the binding's frame: %v", err)
		}
	})

	t.Run("DomainsListsIt", func(t *testing.T) {
		s := fresh(t)
		names, err := s.Conn.Domains(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, s.Domain) {
			t.Fatalf("Domains(active) = %v, want it to hold %s", names, s.Domain)
		}
	})

	t.Run("StateAndDisks", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		st, err := dom.State(ctx)
		if err != nil || !st.Active || st.State != "running" {
			t.Fatalf("State = %+v, %v; want running", st, err)
		}
		disks, err := dom.Disks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range disks {
			got = append(got, d.Target+":"+d.Format)
		}
		if strings.Join(got, " ") != "vda:qcow2 vdb:raw" {
			t.Fatalf("Disks = %v, want vda:qcow2 vdb:raw", got)
		}
		if !disks[0].CanCarryBitmap() || disks[1].CanCarryBitmap() {
			t.Errorf("CanCarryBitmap: vda %v, vdb %v; want true, false", disks[0].CanCarryBitmap(), disks[1].CanCarryBitmap())
		}
	})

	t.Run("CheckpointLifecycle", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		if cps, err := dom.Checkpoints(ctx); err != nil || len(cps) != 0 {
			t.Fatalf("fresh domain: Checkpoints = %v, %v; want none", cps, err)
		}
		for _, name := range []string{"c1", "c2", "c3"} {
			got, err := dom.CreateCheckpoint(ctx, checkpointXML(name, "made by the suite"), virt.CreateFlags{})
			if err != nil || got != name {
				t.Fatalf("CreateCheckpoint(%s) = %q, %v", name, got, err)
			}
		}
		cps, err := dom.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		parents := map[string]string{}
		for _, cp := range cps {
			parents[cp.Name] = cp.Parent
			if cp.Created.IsZero() {
				t.Errorf("%s: no creation time", cp.Name)
			}
		}
		if len(cps) != 3 || parents["c1"] != "" || parents["c2"] != "c1" || parents["c3"] != "c2" {
			t.Fatalf("parents = %v; want c1 root, c2 under c1, c3 under c2", parents)
		}
		c2, err := dom.Checkpoint(ctx, "c2")
		if err != nil {
			t.Fatal(err)
		}
		if c2.Description != "made by the suite" || len(c2.Disks) != 2 ||
			c2.Disks[0] != (virt.CheckpointDisk{Name: "vda", Checkpoint: "bitmap", Bitmap: "c2"}) ||
			c2.Disks[1].Checkpoint != "no" {
			t.Fatalf("Checkpoint(c2) = %+v", c2)
		}

		doc, err := dom.CheckpointXML(ctx, "c2", virt.XMLFlags{NoDomain: true, Size: s.Size})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(doc, "<domain ") {
			t.Errorf("NoDomain XML holds a <domain>:\n%s", doc)
		}
		if s.Size && !strings.Contains(doc, "size='") {
			t.Errorf("Size XML has no size attribute:\n%s", doc)
		}
		full, err := dom.CheckpointXML(ctx, "c2", virt.XMLFlags{})
		if err != nil || !strings.Contains(full, "<domain ") {
			t.Fatalf("full XML: %v\n%s", err, full)
		}

		// Redefining from the full XML (what checkpoint-edit does) keeps it.
		if _, err := dom.CreateCheckpoint(ctx, full, virt.CreateFlags{Redefine: true}); err != nil {
			t.Fatalf("redefine c2: %v", err)
		}

		if err := dom.DeleteCheckpoint(ctx, "c2", virt.DeleteFlags{ChildrenOnly: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom, "c1", "c2")
		if err := dom.DeleteCheckpoint(ctx, "c1", virt.DeleteFlags{Children: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom)
	})

	t.Run("UnknownCheckpoint", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		_, err := dom.Checkpoint(ctx, "nope")
		if !errors.Is(err, virt.ErrNoCheckpoint) {
			t.Fatalf("Checkpoint(nope) = %v, want ErrNoCheckpoint", err)
		}
		if err := dom.DeleteCheckpoint(ctx, "nope", virt.DeleteFlags{}); !errors.Is(err, virt.ErrNoCheckpoint) {
			t.Fatalf("DeleteCheckpoint(nope) = %v, want ErrNoCheckpoint", err)
		}
	})

	t.Run("UnknownDiskRefused", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		doc := "<domaincheckpoint><name>x</name><disks><disk name='vdz' checkpoint='bitmap'/></disks></domaincheckpoint>"
		_, err := dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{})
		if err == nil || !strings.Contains(err.Error(), "vdz") {
			t.Fatalf("CreateCheckpoint(vdz) = %v, want an error naming vdz", err)
		}
		assertNames(t, dom)
	})
}

func domain(t *testing.T, s Subject) virt.Domain {
	t.Helper()
	dom, err := s.Conn.Domain(context.Background(), s.Domain)
	if err != nil {
		t.Fatal(err)
	}
	return dom
}

func checkpointXML(name, description string) string {
	return "<domaincheckpoint><name>" + name + "</name><description>" + description + "</description>" +
		"<disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>"
}

func assertNames(t *testing.T, dom virt.Domain, want ...string) {
	t.Helper()
	cps, err := dom.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cp := range cps {
		got = append(got, cp.Name)
	}
	if strings.Join(sorted(got), ",") != strings.Join(want, ",") {
		t.Fatalf("checkpoints = %v, want %v", got, want)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}
