package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"vbackup/chain"
)

// tpmDir is the emulated TPM's state in a backup's folder.
const tpmDir = "tpm"

// tpmState copies the state of the domain's emulated TPM (swtpm's files)
// into the pending backup. libvirt 9.0 does not say in the domain's XML
// where that state lives (/var/lib/libvirt/swtpm/UUID/tpm2 for the system
// daemon, $XDG_CONFIG_HOME/libvirt/qemu/swtpm/UUID/tpm2 for a user's), so
// it is read from the running swtpm's --tpmstate, on this host: a domain
// on another host, or without a TPM, has none here.
func tpmState(uuid, pending string) (*chain.TPM, error) {
	src := swtpmStateDir(uuid)
	if src == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(pending, tpmDir), 0o700); err != nil {
		return nil, err
	}
	t := &chain.TPM{Dir: tpmDir, Source: src}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue // .lock is swtpm's, not state
		}
		blob, err := copyBlob(filepath.Join(src, e.Name()), filepath.Join(pending, tpmDir, e.Name()))
		if err != nil {
			return nil, err
		}
		blob.File = filepath.Join(tpmDir, e.Name())
		t.Files = append(t.Files, *blob)
	}
	if len(t.Files) == 0 {
		return nil, fmt.Errorf("the TPM state folder %s holds no state", src)
	}
	return t, nil
}

// swtpmStateDir finds the state folder of the swtpm serving domain uuid.
func swtpmStateDir(uuid string) string {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(cmd, []byte("swtpm")) || !bytes.Contains(cmd, []byte(uuid)) {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		for i, a := range args {
			if a != "--tpmstate" || i+1 == len(args) {
				continue
			}
			for _, opt := range strings.Split(args[i+1], ",") {
				if dir, ok := strings.CutPrefix(opt, "dir="); ok && strings.Contains(dir, uuid) {
					return dir
				}
			}
		}
	}
	return ""
}

// restoreTPM puts a backup's TPM state where libvirt keeps it for the new
// domain newUUID (beside the original's: the same folder with the new
// UUID), owned as the original's was, before the domain first starts: then
// libvirt runs no swtpm_setup, and swtpm goes on from the saved state.
func restoreTPM(b *chain.Backup, newUUID string) (string, error) {
	t := b.Firmware.TPM
	if t == nil {
		return "", nil
	}
	// .../swtpm/OLD-UUID/tpm2 -> .../swtpm/NEW-UUID/tpm2
	uuidDir := filepath.Dir(t.Source)
	if filepath.Base(uuidDir) != b.Domain.UUID {
		return "", fmt.Errorf("the TPM state was kept from %s, not from a folder named after the domain's UUID: vbackup does not know where the new domain's goes", t.Source)
	}
	base := filepath.Dir(uuidDir)
	dst := filepath.Join(base, newUUID, filepath.Base(t.Source))
	if _, err := os.Lstat(filepath.Join(base, newUUID)); err == nil {
		return "", fmt.Errorf("%s exists already; vbackup never writes over a TPM's state", filepath.Join(base, newUUID))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	fi, err := os.Stat(base)
	if err != nil {
		return "", fmt.Errorf("the folder of TPM states %s: %w", base, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	uid, gid := int(st.Uid), int(st.Gid)
	fail := func(err error) (string, error) {
		os.RemoveAll(filepath.Join(base, newUUID))
		return "", err
	}
	for _, d := range []string{filepath.Join(base, newUUID), dst} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fail(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return fail(err)
		}
	}
	for _, f := range t.Files {
		to := filepath.Join(dst, filepath.Base(f.File))
		got, err := copyBlob(filepath.Join(b.Dir, f.File), to)
		if err != nil {
			return fail(err)
		}
		if got.SHA256 != f.SHA256 {
			return fail(fmt.Errorf("the TPM state %s of backup %s reads %s, not the manifest's %s", f.File, b.Name(), got.SHA256, f.SHA256))
		}
		if err := os.Chown(to, uid, gid); err != nil {
			return fail(err)
		}
	}
	return dst, nil
}
