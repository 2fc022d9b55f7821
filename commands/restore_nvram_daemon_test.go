package commands

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"vbackup/internal/testbed"
)

// uefiDomain turns a bed domain into a UEFI one (Debian's OVMF), running,
// and returns its UEFI variables file.
func uefiDomain(t *testing.T, bed *testbed.Bed, dom string) string {
	t.Helper()
	for _, f := range []string{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v (scripts/install-deps.sh installs Debian's ovmf)", err)
		}
	}
	bed.Virsh(t, "destroy", dom)
	var def libvirtxml.Domain
	if err := def.Unmarshal(bed.Virsh(t, "dumpxml", "--inactive", dom)); err != nil {
		t.Fatal(err)
	}
	def.OS.Loader = &libvirtxml.DomainLoader{Path: "/usr/share/OVMF/OVMF_CODE_4M.fd", Readonly: "yes", Type: "pflash"}
	def.OS.NVRam = &libvirtxml.DomainNVRam{Template: "/usr/share/OVMF/OVMF_VARS_4M.fd"}
	if def.Features == nil {
		def.Features = &libvirtxml.DomainFeatureList{}
	}
	def.Features.ACPI = &libvirtxml.DomainFeature{}
	doc, err := def.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "uefi.xml")
	os.WriteFile(file, []byte(doc), 0o644)
	bed.Virsh(t, "define", file)
	// Before the bed's own cleanup, which does not remove an nvram file.
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("destroy", dom)
		_, _ = bed.TryVirsh("undefine", dom, "--nvram", "--checkpoints-metadata")
	})
	bed.Virsh(t, "start", dom)
	if err := def.Unmarshal(bed.Virsh(t, "dumpxml", dom)); err != nil || def.OS.NVRam == nil || def.OS.NVRam.NVRam == "" {
		t.Fatalf("the UEFI domain has no nvram file: %v", err)
	}
	return def.OS.NVRam.NVRam
}

// nvramOf is the UEFI variables file a domain's definition names.
func nvramOf(t *testing.T, bed *testbed.Bed, dom string) string {
	t.Helper()
	var def libvirtxml.Domain
	if err := def.Unmarshal(bed.Virsh(t, "dumpxml", "--inactive", dom)); err != nil || def.OS == nil || def.OS.NVRam == nil {
		t.Fatalf("domain %s has no <nvram>: %v", dom, err)
	}
	return def.OS.NVRam.NVRam
}

// A UEFI guest keeps its variables: the backup holds the nvram file, and
// restore --define and --instant give the new domain that file, not a
// fresh copy of the firmware's template.
func TestRestoreKeepsNVRAM(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	nvram := uefiDomain(t, bed, dom)
	// Mark the variables, shut off, as a guest's boot entry would: the
	// template does not hold this.
	bed.Virsh(t, "destroy", dom)
	vars, err := os.ReadFile(nvram)
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("vbackup-nvram-kept")
	copy(vars[len(vars)-4096:], marker)
	if err := os.WriteFile(nvram, vars, 0o600); err != nil {
		t.Fatal(err)
	}
	bed.Virsh(t, "start", dom)
	dir := filepath.Join(bed.Folder(t), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	m := storeBackups(t, dir)[0]
	if m.Firmware == nil || m.Firmware.NVRAM == nil || m.Firmware.NVRAM.Source != nvram {
		t.Fatalf("the manifest keeps no nvram: %+v", m.Firmware)
	}

	full, inst := dom+"-f", dom+"-i"
	instantDomain(t, bed, full)
	instantDomain(t, bed, inst)
	r := vb(t, open, "restore", "--from", dir, "--to", filepath.Join(bed.Folder(t), "full"), "--define", full)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "the UEFI variables (nvram) come from the backup")
	if strings.Contains(r.stderr, "start afresh") {
		t.Errorf("restore says the variables start afresh:\n%s", r.stderr)
	}
	r = vb(t, open, "restore", "--from", dir, "--instant", "--to", filepath.Join(bed.Folder(t), "inst"), "--define", inst, "--start")
	wantCode(t, r, ExitOK)
	for _, name := range []string{full, inst} {
		path := nvramOf(t, bed, name)
		if path == nvram || !strings.HasSuffix(path, name+"_VARS.fd") {
			t.Errorf("domain %s's nvram is %s", name, path)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, vars) {
			t.Errorf("domain %s's UEFI variables are not the backed-up ones", name)
		}
	}
	if st := strings.TrimSpace(bed.Virsh(t, "domstate", inst)); st != "running" {
		t.Errorf("the instant restore of a UEFI domain is %q", st)
	}
	wantCode(t, vb(t, open, "restore", "--finish", inst), ExitOK)

	// verify checks the variables too.
	r = vb(t, open, "verify", "--from", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "nvram  ok") {
		t.Errorf("verify does not check the nvram:\n%s", r.stdout)
	}
	kept := filepath.Join(m.Dir, m.Firmware.NVRAM.File)
	vars[0] ^= 0xff
	os.WriteFile(kept, vars, 0o600)
	r = vb(t, open, "verify", "--from", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, m.Name()+" (nvram: damaged)")
}
