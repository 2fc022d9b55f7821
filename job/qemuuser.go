package job

import (
	"os"
	"path/filepath"
	"syscall"

	"vbackup/virt"
)

// qemuUser is the user QEMU runs as, as far as vbackup can tell: the owner
// of the domain's first disk image file. ok is false when vbackup is not
// root (nothing can be handed over then) or no image file is seen here.
func qemuUser(disks []virt.Disk) (uid, gid int, ok bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	for _, d := range disks {
		if fi, err := os.Stat(d.Source); err == nil && d.Type == "file" {
			st := fi.Sys().(*syscall.Stat_t)
			return int(st.Uid), int(st.Gid), true
		}
	}
	return 0, 0, false
}

// HandToQEMU gives a push's folder to the user QEMU runs as, who writes the
// images into it.
func HandToQEMU(dir string, disks []virt.Disk) error {
	uid, gid, ok := qemuUser(disks)
	if !ok {
		return nil
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	// QEMU's user must get through the backups' folder to its own; passing
	// through lists nothing.
	parent := filepath.Dir(dir)
	pi, err := os.Stat(parent)
	if err != nil {
		return err
	}
	return os.Chmod(parent, pi.Mode().Perm()|0o011)
}
