package engine

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// qemuAccount is the user an instant restore's QEMU runs as, to whom the
// overlays belong and the backup images are opened. Under libvirt's DAC
// driver that is the domain's own static DAC label if it has one, else
// the host's base label for its type (libvirt-qemu on Debian): never the
// owner of OUTDIR, which may be any user's folder, who would then be
// given read access to the backups. Without DAC (a session daemon) QEMU
// runs as the daemon's user, the one who owns the folder it works in.
func qemuAccount(models []virt.SecurityModel, domainXML, to string) (account, error) {
	for _, m := range models {
		if m.Name != "dac" {
			continue
		}
		var dom libvirtxml.Domain
		if err := dom.Unmarshal(domainXML); err != nil {
			return account{}, fmt.Errorf("the backed-up domain's definition: %w", err)
		}
		for _, l := range dom.SecLabel {
			if l.Model == "dac" && l.Type == "static" && l.Label != "" {
				return dacAccount(l.Label)
			}
		}
		if label, ok := m.BaseLabels[dom.Type]; ok {
			return dacAccount(label)
		}
	}
	return overlayOwner(to)
}

// dacAccount reads a DAC label, "USER:GROUP" where each is a name or a
// number written +N.
func dacAccount(label string) (account, error) {
	u, g, ok := strings.Cut(label, ":")
	if !ok {
		return account{}, fmt.Errorf("DAC label %q is not USER:GROUP", label)
	}
	uid, err := dacID(u, func(n string) (string, error) {
		x, err := user.Lookup(n)
		if err != nil {
			return "", err
		}
		return x.Uid, nil
	})
	if err != nil {
		return account{}, fmt.Errorf("DAC label %q: %w", label, err)
	}
	gid, err := dacID(g, func(n string) (string, error) {
		x, err := user.LookupGroup(n)
		if err != nil {
			return "", err
		}
		return x.Gid, nil
	})
	if err != nil {
		return account{}, fmt.Errorf("DAC label %q: %w", label, err)
	}
	return lookupAccount(uid, gid), nil
}

func dacID(s string, byName func(string) (string, error)) (int, error) {
	if n, ok := strings.CutPrefix(s, "+"); ok {
		return strconv.Atoi(n)
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	id, err := byName(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}

// overlayOwner is the owner of OUTDIR, or of the folder it is made in.
func overlayOwner(dir string) (account, error) {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return account{}, fmt.Errorf("--to %s: %s is not a folder", dir, p)
			}
			st := fi.Sys().(*syscall.Stat_t)
			return lookupAccount(int(st.Uid), int(st.Gid)), nil
		}
		if !errors.Is(err, os.ErrNotExist) || p == "/" {
			return account{}, err
		}
	}
}
