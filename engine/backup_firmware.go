package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
)

// nvramFile is the UEFI variables' name in a backup's folder.
const nvramFile = "nvram.fd"

// firmware copies what the domain keeps besides its disks into the
// pending backup: the UEFI variables file, as QEMU has written it so far
// (QEMU writes it only when the guest changes a variable, in place; the
// copy is what a host-side reader sees, as virtnbdbackup takes it). A
// file that cannot be read here (a remote host's) is left out, and said.
func (b *Backup) firmware(ctx context.Context) (*chain.Firmware, error) {
	doc, err := b.dom.XML(ctx, false)
	if err != nil {
		return nil, err
	}
	fw := &chain.Firmware{}
	if path := nvramPath(doc); path != "" {
		blob, err := copyBlob(path, filepath.Join(b.pending.Dir(), nvramFile))
		if err != nil {
			b.notes.Notef("warning: the domain's UEFI variables (%s) are not in this backup: %v", path, err)
		} else {
			blob.File = nvramFile
			fw.NVRAM = blob
		}
	}
	if hasTPMEmulator(doc) {
		t, err := tpmState(b.uuid, b.pending.Dir())
		switch {
		case err != nil:
			b.notes.Notef("warning: the domain's TPM state is not in this backup: %v", err)
		case t == nil:
			b.notes.Notef("warning: the domain has an emulated TPM whose state vbackup does not find on this host (no swtpm of it runs here): it is not in this backup")
		default:
			fw.TPM = t
		}
	}
	if fw.NVRAM == nil && fw.TPM == nil {
		return nil, nil
	}
	return fw, nil
}

// hasTPMEmulator reports a definition with an emulated TPM.
func hasTPMEmulator(doc string) bool {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil || dom.Devices == nil {
		return false
	}
	for _, t := range dom.Devices.TPMs {
		if t.Backend != nil && t.Backend.Emulator != nil {
			return true
		}
	}
	return false
}

// nvramPath is a definition's UEFI variables file, if it has one.
func nvramPath(doc string) string {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil || dom.OS == nil || dom.OS.NVRam == nil {
		return ""
	}
	if n := dom.OS.NVRam; n.NVRam != "" {
		return n.NVRam
	} else if n.Source != nil && n.Source.File != nil {
		return n.Source.File.File
	}
	return ""
}

// copyBlob copies src into a new file dst, on stable storage, and says
// what it holds.
func copyBlob(src, dst string) (*chain.Blob, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return nil, fmt.Errorf("copying %s: %w", src, err)
	}
	return &chain.Blob{Source: src, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
