package commands

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

// A domain's emulated TPM keeps its state: the backup holds swtpm's files,
// and the domain restore --define makes gets them under its own UUID
// before it first starts, and runs.
func TestRestoreKeepsTPM(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Virsh(t, "destroy", dom)
	var def libvirtxml.Domain
	if err := def.Unmarshal(bed.Virsh(t, "dumpxml", "--inactive", dom)); err != nil {
		t.Fatal(err)
	}
	def.Devices.TPMs = []libvirtxml.DomainTPM{{Model: "tpm-tis", Backend: &libvirtxml.DomainTPMBackend{Emulator: &libvirtxml.DomainTPMBackendEmulator{Version: "2.0"}}}}
	doc, _ := def.Marshal()
	file := filepath.Join(t.TempDir(), "tpm.xml")
	os.WriteFile(file, []byte(doc), 0o644)
	bed.Virsh(t, "define", file)
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("destroy", dom)
		_, _ = bed.TryVirsh("undefine", dom, "--tpm", "--checkpoints-metadata")
	})
	bed.Virsh(t, "start", dom)
	dir := filepath.Join(t.TempDir(), "backups")
	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	b := storeBackups(t, dir)[0]
	if b.Firmware == nil || b.Firmware.TPM == nil || !strings.Contains(b.Firmware.TPM.Source, b.Domain.UUID) {
		t.Fatalf("the backup keeps no TPM state: %+v\n%s", b.Firmware, r.stderr)
	}
	var kept []byte
	for _, f := range b.Firmware.TPM.Files {
		if strings.HasSuffix(f.File, ".permall") {
			kept, _ = os.ReadFile(filepath.Join(b.Dir, f.File))
		}
	}
	if len(kept) == 0 {
		t.Fatalf("no tpm2-00.permall kept: %+v", b.Firmware.TPM.Files)
	}

	name := dom + "-t"
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("destroy", name)
		_, _ = bed.TryVirsh("undefine", name, "--tpm")
	})
	r = vb(t, open, "restore", "--from", dir, "--to", filepath.Join(bed.Folder(t), "r"), "--define", name)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "the emulated TPM's state comes from the backup")
	uuid := strings.TrimSpace(bed.Virsh(t, "domuuid", name))
	state := filepath.Join(filepath.Dir(filepath.Dir(b.Firmware.TPM.Source)), uuid, "tpm2", "tpm2-00.permall")
	got, err := os.ReadFile(state)
	if err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("the new domain's TPM state %s: %v, equal %v", state, err, bytes.Equal(got, kept))
	}
	bed.Virsh(t, "start", name)
	if st := strings.TrimSpace(bed.Virsh(t, "domstate", name)); st != "running" {
		t.Errorf("the restored TPM domain is %q", st)
	}
}
