package engine

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// instantFixture is a running fake domain "vm2" whose vda is an overlay on
// an image of backup b1 in a folder that records it.
func instantFixture(t *testing.T) (*virtfake.Conn, string) {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "b1", "vda.qcow2")
	overlay := filepath.Join(t.TempDir(), "vda.qcow2")
	for _, args := range [][]string{
		{"mkdir", "-p", filepath.Dir(base)},
		{"qemu-img", "create", "-q", "-f", "qcow2", base, "64M"},
		{"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, overlay},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	conn := virtfake.New()
	def := libvirtxml.Domain{Type: "qemu", Name: "vm2", Devices: &libvirtxml.DomainDeviceList{Disks: []libvirtxml.DomainDisk{{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: overlay}},
		BackingStore: &libvirtxml.DomainDiskBackingStore{Format: &libvirtxml.DomainDiskFormat{Type: "qcow2"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: base}}},
		Target: &libvirtxml.DomainDiskTarget{Dev: "vda", Bus: "virtio"},
	}}}}
	doc, err := def.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if doc, err = withInstantMeta(doc, instantMeta{Dir: dir, Backup: "b1"}); err != nil {
		t.Fatal(err)
	}
	dom, err := conn.DefineDomain(context.Background(), doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := dom.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	uuid, _ := dom.UUID(context.Background())
	rec := chain.InUse{Domain: "vm2", UUID: uuid, Backup: "b1", Chain: []string{"b1"},
		Disks: []chain.InUseDisk{{Name: "vda", Overlay: overlay, Backing: base}}}
	if err := chain.WriteInUse(dir, rec); err != nil {
		t.Fatal(err)
	}
	return conn, dir
}

// cancelOnUpdate stops the finish at its first progress sample.
type cancelOnUpdate struct {
	cancel  context.CancelFunc
	updates int
	final   string
}

func (p *cancelOnUpdate) Update(progress.Sample) {
	p.updates++
	p.cancel()
}
func (p *cancelOnUpdate) Finish(r progress.Result) { p.final = r.State }

func reads(t *testing.T, conn virt.Conn) []string {
	t.Helper()
	dom, err := conn.Domain(context.Background(), "vm2")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := dom.XML(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(doc); err != nil {
		t.Fatal(err)
	}
	return virt.BackingFiles(&def, "vda")
}

// Ctrl-C during --finish cancels the pull and leaves the domain running on
// its overlay, still recorded; the next --finish goes on to the end.
func TestFinishStoppedGoesOn(t *testing.T) {
	conn, dir := instantFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &cancelOnUpdate{cancel: cancel}
	req := FinishRequest{Domain: "vm2", Conn: conn, Now: time.Now, Every: time.Millisecond}
	_, err := Finish(ctx, req, p, &lines{})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "runs on its overlays still") {
		t.Fatalf("stopped finish: %v", err)
	}
	if p.final != progress.JobCancelled {
		t.Errorf("the printer was told %q, want cancelled", p.final)
	}
	if !slices.Contains(conn.Calls(), "BlockJobAbort") {
		t.Errorf("the pull was not cancelled: calls %v", conn.Calls())
	}
	if len(reads(t, conn)) == 0 {
		t.Fatal("a stopped finish dropped the backing chain")
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); !ok {
		t.Fatal("a stopped finish removed the record")
	}
	dom, _ := conn.Domain(context.Background(), "vm2")
	if st, _ := dom.State(context.Background()); !st.Active {
		t.Fatal("a stopped finish left the domain shut off")
	}

	res, err := Finish(context.Background(), req, progress.NewQuiet(), &lines{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Pulled, []string{"vda"}) || len(reads(t, conn)) != 0 {
		t.Fatalf("finish again: %+v, reads %v", res, reads(t, conn))
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); ok {
		t.Fatal("a finished instant restore is still recorded")
	}
}

// A deleted instant restore: --finish without --from says how to release
// it, with --from releases it; a record whose overlays are gone is dropped
// by prune's check.
func TestFinishDeletedDomain(t *testing.T) {
	conn, dir := instantFixture(t)
	dom, _ := conn.Domain(context.Background(), "vm2")
	dom.(*virtfake.Domain).Stop()
	if err := dom.Undefine(context.Background()); err != nil {
		t.Fatal(err)
	}
	req := FinishRequest{Domain: "vm2", Conn: conn, Now: time.Now}
	_, err := Finish(context.Background(), req, progress.NewQuiet(), &lines{})
	if err == nil || !strings.Contains(err.Error(), "--finish vm2 --from DIR") {
		t.Fatalf("finish of a deleted domain without --from: %v", err)
	}
	rec, _, _ := chain.FindInUse(dir, "vm2")
	if reads, _ := stillReads(rec, dir); !reads {
		t.Fatal("an overlay backed by the folder does not count as reading it")
	}
	req.From = dir
	res, err := Finish(context.Background(), req, progress.NewQuiet(), &lines{})
	if err != nil || !res.Released {
		t.Fatalf("finish --from of a deleted domain: %+v, %v", res, err)
	}
	if _, ok, _ := chain.FindInUse(dir, "vm2"); ok {
		t.Fatal("the record is still there")
	}
	if _, err := Finish(context.Background(), req, progress.NewQuiet(), &lines{}); err == nil || !strings.Contains(err.Error(), "records no instant restore") {
		t.Fatalf("finish --from again: %v", err)
	}
}
