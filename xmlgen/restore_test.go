package xmlgen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRestoredDomain(t *testing.T) {
	in, err := os.ReadFile(filepath.Join(goldenDir, "in", "restore-domain.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got, notes, err := RestoredDomain(string(in), "web1-restored", map[string]RestoredDisk{
		"vda": {Path: "/restore/web1/vda.qcow2", Format: "qcow2"},
		"vdb": {Path: "/restore/web1/vdb.raw", Format: "raw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertGolden(t, "restore-domain.xml", got, "domain")
	for _, gone := range []string{"4dea22b3", "52:54:00:6b:3c:58", "base.qcow2", "web1-scratch.img", "/dev/vg0", "web1_VARS.fd", "5901", "hostdev"} {
		if strings.Contains(got, gone) {
			t.Errorf("the restored domain still holds %s", gone)
		}
	}
	if want := "disk vdc was not restored: left out of domain web1-restored\n" +
		"1 passed-through host device(s) left out: they belong to the original\n" +
		"the UEFI variables (nvram) start afresh from the firmware's template"; strings.Join(notes, "\n") != want {
		t.Errorf("notes = %q, want %q", notes, want)
	}

	// An instant restore's overlay: libvirt must not chown the backups
	// below it to QEMU's user.
	inst, _, err := RestoredDomain(string(in), "web1-now", map[string]RestoredDisk{
		"vda": {Path: "/restore/web1/vda.qcow2", Format: "qcow2", Backup: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := `<source file="/restore/web1/vda.qcow2">` + "\n" + `        <seclabel model="dac" relabel="no"></seclabel>`; !strings.Contains(inst, want) {
		t.Errorf("an instant restore's disk lacks %s:\n%s", want, inst)
	}
	if strings.Contains(got, "relabel") {
		t.Errorf("a plain restore's disks keep libvirt's relabelling, yet:\n%s", got)
	}

	_, _, err = RestoredDomain(string(in), "x", map[string]RestoredDisk{"vdz": {Path: "/r/vdz.qcow2", Format: "qcow2"}})
	if err == nil || !strings.Contains(err.Error(), "no disk [vdz]") {
		t.Errorf("restoring a disk the definition lacks: %v", err)
	}
	if _, _, err := RestoredDomain("<domain", "x", nil); err == nil || !strings.Contains(err.Error(), "saved domain definition") {
		t.Errorf("a broken definition: %v", err)
	}
}
