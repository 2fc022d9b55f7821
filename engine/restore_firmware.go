package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	exportfetch "vbackup/fetch"
	"vbackup/progress"
	"vbackup/virt"
)

// nvramTarget is where a restored domain's UEFI variables go (OUTDIR/
// NAME_VARS.fd, as libvirt names them), or "" when the backup kept none.
// Asked before anything is written: it must not exist.
func nvramTarget(b *chain.Backup, name, outDir string) (string, error) {
	if b.Firmware == nil || b.Firmware.NVRAM == nil || name == "" {
		return "", nil
	}
	dst := filepath.Join(outDir, name+"_VARS.fd")
	if _, err := os.Lstat(dst); err == nil {
		return "", fmt.Errorf("%s exists already; vbackup never writes over a file: move it away or restore into another folder", dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return dst, nil
}

// restoreNVRAM copies the backup's UEFI variables to dst, checks them
// against the manifest, gives them to owner, and points the definition's
// <nvram> at them: the restored guest keeps its boot entries. The note
// that the variables start afresh goes from notes.
func restoreNVRAM(b *chain.Backup, dst string, owner account, doc string, notes []string) (string, []string, error) {
	if dst == "" {
		return doc, notes, nil
	}
	want := b.Firmware.NVRAM
	got, err := copyBlob(filepath.Join(b.Dir, want.File), dst)
	if err != nil {
		return "", nil, err
	}
	if got.SHA256 != want.SHA256 {
		os.Remove(dst)
		return "", nil, fmt.Errorf("the UEFI variables of backup %s read %s, not the manifest's %s: 'vbackup verify --from %s' names the damaged backup",
			b.Name(), got.SHA256, want.SHA256, filepath.Dir(b.Dir))
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(dst, owner.uid, owner.gids[0]); err != nil {
			os.Remove(dst)
			return "", nil, err
		}
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return "", nil, err
	}
	var template string
	var orig libvirtxml.Domain
	if orig.Unmarshal(b.Domain.XML) == nil && orig.OS != nil && orig.OS.NVRam != nil {
		template = orig.OS.NVRam.Template
	}
	if dom.OS == nil {
		dom.OS = &libvirtxml.DomainOS{}
	}
	dom.OS.NVRam = &libvirtxml.DomainNVRam{NVRam: dst, Template: template}
	out, err := dom.Marshal()
	if err != nil {
		return "", nil, err
	}
	kept := []string{}
	for _, n := range notes {
		if !strings.Contains(n, "(nvram) start afresh") {
			kept = append(kept, n)
		}
	}
	kept = append(kept, "the UEFI variables (nvram) come from the backup: "+dst)
	return out, kept, nil
}

// definedFirmware gives a fully restored domain its UEFI variables, and
// its images and variables to the user QEMU runs as (OUTDIR's owner), who
// must read and write them once the domain starts.
func definedFirmware(req RestoreRequest, b *chain.Backup, disks []exportfetch.Disk, doc string, notes []string) (string, []string, error) {
	owner, err := overlayOwner(req.To)
	if err != nil {
		return "", nil, err
	}
	if os.Geteuid() == 0 {
		for _, d := range disks {
			if err := os.Chown(d.Path, owner.uid, owner.gids[0]); err != nil {
				return "", nil, err
			}
		}
	}
	dst, err := nvramTarget(b, req.Define, req.To)
	if err != nil {
		return "", nil, err
	}
	return restoreNVRAM(b, dst, owner, doc, notes)
}

// definedTPM gives a newly defined domain the TPM state the backup kept.
func definedTPM(ctx context.Context, b *chain.Backup, dom virt.Domain, notes progress.Notifier) error {
	if b.Firmware == nil || b.Firmware.TPM == nil {
		return nil
	}
	uuid, err := dom.UUID(ctx)
	if err != nil {
		return err
	}
	dst, err := restoreTPM(b, uuid)
	if err != nil {
		return fmt.Errorf("its TPM state could not be restored: %w", err)
	}
	notes.Notef("note: the emulated TPM's state comes from the backup: %s", dst)
	return nil
}
