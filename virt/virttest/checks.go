package virttest

import (
	"errors"
	"strings"
	"testing"

	"vbackup/virt"
)

var kinds = []error{
	virt.ErrNoDomain, virt.ErrNoCheckpoint, virt.ErrUnsupported, virt.ErrInvalidArg,
	virt.ErrOperationInvalid, virt.ErrCheckpointExists, virt.ErrCheckpointInconsistent,
	virt.ErrXML, virt.ErrConnect, virt.ErrNoAgent,
	virt.ErrNoPool, virt.ErrVolumeExists,
}

// kindOf is the sentinel err matches, nil for an error libvirtconn gives
// no kind (libvirt codes such as VIR_ERR_OPERATION_FAILED).
func kindOf(err error) error {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// wantErr fails t unless err is an error of kind (nil: of no kind) whose
// message holds each of words.
func wantErr(t *testing.T, what string, err, kind error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded; want an error of kind %v", what, kind)
	}
	if got := kindOf(err); got != kind {
		t.Fatalf("%s = %q of kind %v; want kind %v", what, err, got, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s = %q; want it to say %q", what, err, w)
		}
	}
}

// testDriver reports libvirt's test driver, which differs from the QEMU
// driver (and so from the fake) in what it refuses.
func testDriver(s Subject) bool { return strings.HasPrefix(s.Conn.URI(), "test:") }

func parentOf(t *testing.T, dom virt.Domain, name string) string {
	t.Helper()
	cp, err := dom.Checkpoint(bg, name)
	if err != nil {
		t.Fatal(err)
	}
	return cp.Parent
}

func create(t *testing.T, dom virt.Domain, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := dom.CreateCheckpoint(bg, checkpointXML(name, ""), virt.CreateFlags{}); err != nil {
			t.Fatalf("CreateCheckpoint(%s): %v", name, err)
		}
	}
}

// deleteAll deletes every checkpoint of dom, metadata only (the real
// daemon refuses to undefine a domain that still has checkpoints).
func deleteAll(dom virt.Domain) {
	cps, _ := dom.Checkpoints(bg)
	for _, cp := range cps {
		_ = dom.DeleteCheckpoint(bg, cp.Name, virt.DeleteFlags{MetadataOnly: true})
	}
}
