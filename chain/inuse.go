package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// inUseDir holds, in a store's folder, one record per domain that runs
// from a backup's files (an instant restore): its overlays read through
// that backup's chain, so prune must neither remove nor rewrite any file
// of it. A record is written before the domain is defined and removed once
// the domain reads nothing from the folder any more.
const inUseDir = ".vbackup.inuse"

// LockInUse takes dir's records for one change at a time, waiting for
// another holder: an instant restore reads the grants that others made,
// adds its own and writes its record, while a --finish or a prune takes
// back the grants no other record names and removes a record. Without it
// a grant taken as shared could be revoked by the record that made it
// before the new record naming it is written.
//
// The lock is on the records' folder itself, so that nothing is left in
// dir once no record is: unlock removes the folder when it is empty, and
// a waiter that then gets a removed folder's lock takes the new one's.
func LockInUse(dir string) (unlock func(), err error) {
	sub := filepath.Join(dir, inUseDir)
	for {
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return nil, err
		}
		f, err := os.Open(sub)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", sub, err)
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(sub)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return func() {
				if entries, err := os.ReadDir(sub); err == nil && len(entries) == 0 {
					_ = os.Remove(sub)
				}
				f.Close()
			}, nil
		}
		f.Close()
	}
}

// InUse records a domain that reads from a backup of the folder.
type InUse struct {
	Domain  string      `json:"domain"`
	UUID    string      `json:"uuid,omitempty"` // set once the domain is defined
	URI     string      `json:"uri,omitempty"`  // the libvirt connection it was defined on
	Backup  string      `json:"backup"`         // the point it reads
	Chain   []string    `json:"chain"`          // every backup whose files it reads, oldest first
	Started time.Time   `json:"started"`
	Disks   []InUseDisk `json:"disks"`
	// Grants are the read permissions vbackup gave QEMU's user on the
	// folder's files (POSIX ACL entries), taken back with the record.
	Grants []Grant `json:"grants,omitempty"`
}

// InUseDisk is one disk of an instant restore: its overlay outside the
// folder, and the backup image it is backed by.
type InUseDisk struct {
	Name    string `json:"name"`
	Overlay string `json:"overlay"`
	Backing string `json:"backing"`
}

// Grant is one ACL entry vbackup added: user UID may read (Perm 4) or
// pass through (Perm 1) Path.
type Grant struct {
	Path string `json:"path"`
	UID  int    `json:"uid"`
	Perm uint16 `json:"perm"`
	// Mask is what the grant added to the ACL's mask, which every named
	// entry and the owning group are limited by: taken back with it.
	Mask uint16 `json:"mask,omitempty"`
}

// Same reports whether g and o give the same access (whatever mask bits
// each added).
func (g Grant) Same(o Grant) bool { return g.Path == o.Path && g.UID == o.UID && g.Perm == o.Perm }

// Reads reports whether the record keeps backup name.
func (u InUse) Reads(name string) bool { return slices.Contains(u.Chain, name) }

func inUseName(domain string) string { return domain + ".json" }

// InUse lists the domains recorded as reading from the folder's backups,
// by domain name.
func (s *Store) InUse() ([]InUse, error) {
	return ReadInUse(s.Dir)
}

// ReadInUse lists the records of folder dir.
func ReadInUse(dir string) ([]InUse, error) {
	entries, err := os.ReadDir(filepath.Join(dir, inUseDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []InUse
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, inUseDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var u InUse
		if err := json.Unmarshal(data, &u); err != nil || u.Domain == "" || u.Backup == "" {
			return nil, fmt.Errorf("%s: not a record of a domain reading these backups (%v); remove it once no domain runs from them", path, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// FindInUse is the record of domain in dir, if there is one.
func FindInUse(dir, domain string) (InUse, bool, error) {
	all, err := ReadInUse(dir)
	if err != nil {
		return InUse{}, false, err
	}
	for _, u := range all {
		if u.Domain == domain {
			return u, true, nil
		}
	}
	return InUse{}, false, nil
}

// WriteInUse writes (or replaces) domain u.Domain's record, on stable
// storage, in one rename.
func WriteInUse(dir string, u InUse) error {
	sub := filepath.Join(dir, inUseDir)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(u, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSynced(sub, inUseName(u.Domain), append(data, '\n'))
}

// RemoveInUse removes domain's record; none is not an error.
func RemoveInUse(dir, domain string) error {
	sub := filepath.Join(dir, inUseDir)
	err := os.Remove(filepath.Join(sub, inUseName(domain)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(sub); err == nil {
		d.Sync()
		d.Close()
	}
	// The folder goes with its last record.
	_ = os.Remove(sub)
	return nil
}
