package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// removalFile names, in a store's folder, the backup a prune is removing.
// It is written before the first byte of the removal changes and deleted
// after the backup's folder is gone, so that an interrupted prune can be
// completed: the removal merges the backup's data into the backups that
// read through it, which makes the backup itself no longer what its
// manifest says, while they still need its files.
const removalFile = ".vbackup.removing"

// Removal is the record of a backup being removed: which of its disks'
// images go into which later backup. It is the plan the removal follows to
// its end: once a step has begun, the manifests alone no longer tell it
// (the next backup's manifest may say full while its file still reads
// through the removed one).
type Removal struct {
	Backup  string    `json:"backup"`
	Started time.Time `json:"started"`
	Merges  []Planned `json:"merges,omitempty"`
}

// Planned is one disk of a removed backup, and the backup built on it.
type Planned struct {
	Disk string `json:"disk"`
	Into string `json:"into"`
}

func readRemoval(dir string) (*Removal, error) {
	data, err := os.ReadFile(filepath.Join(dir, removalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Removal
	if err := json.Unmarshal(data, &r); err != nil || r.Backup == "" {
		return nil, fmt.Errorf("%s: not a record of a backup being removed (%v); remove the file if no prune runs", filepath.Join(dir, removalFile), err)
	}
	return &r, nil
}

// BeginRemoval records that backup b is being removed, with its merges,
// on stable storage, and takes it out of the listed backups. Call it only
// while holding the lock, and only when no removal is recorded.
func (s *Store) BeginRemoval(b *Backup, merges []Planned, now time.Time) error {
	if s.Removing != nil {
		return fmt.Errorf("backup %s is being removed already", s.Removing.Name())
	}
	data, err := json.Marshal(Removal{Backup: b.Name(), Started: now, Merges: merges})
	if err != nil {
		return err
	}
	if err := writeFileSynced(s.Dir, removalFile, data); err != nil {
		return err
	}
	s.Removing, s.Plan = b, merges
	for i, x := range s.Backups {
		if x == b {
			s.Backups = append(s.Backups[:i:i], s.Backups[i+1:]...)
			break
		}
	}
	return nil
}

// EndRemoval takes the backup being removed out of the folder, then the
// record of its removal. Its folder is first renamed to a hidden name in
// one step, so that no crash leaves a folder that lost its manifest but
// not its other files: the hidden folder, if a crash leaves it, is an
// unfinished leftover, which the next backup or prune removes.
func (s *Store) EndRemoval() error {
	if s.Removing == nil && !s.staleRemoval {
		return nil
	}
	var gone string
	if s.Removing != nil {
		gone = filepath.Join(s.Dir, "."+s.Removing.Name()+partialSuffix)
		// A leftover of the same name (an earlier crash here) would stop
		// the rename.
		if err := os.RemoveAll(gone); err != nil {
			return err
		}
		if err := os.Rename(s.Removing.Dir, gone); err != nil {
			return err
		}
		if err := syncPath(s.Dir); err != nil {
			return err
		}
	}
	// Not synced: a record that a crash brings back names a backup that
	// is gone, which the next prune or backup drops (staleRemoval), and
	// a sync costs a journal commit of its own.
	if err := os.Remove(filepath.Join(s.Dir, removalFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.Removing, s.Plan, s.staleRemoval = nil, nil, false
	if gone == "" {
		return nil
	}
	return os.RemoveAll(gone)
}

// RemovalLeft reports a record of a removal that a stopped prune left:
// the backup itself (Removing) still to remove, or only the record, when
// the prune stopped after the backup was gone.
func (s *Store) RemovalLeft() bool { return s.Removing != nil || s.staleRemoval }

// Rewrite replaces b's manifest with m on stable storage, in one rename.
func (s *Store) Rewrite(b *Backup, m Manifest) error {
	m.Format = FormatVersion
	if m.Checkpoint.Name != b.Name() {
		return fmt.Errorf("manifest of backup %q written as %q", m.Checkpoint.Name, b.Name())
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("backup %s: %w", b.Name(), err)
	}
	data, err := m.marshal()
	if err != nil {
		return err
	}
	if err := writeFileSynced(b.Dir, ManifestFile, data); err != nil {
		return err
	}
	b.Manifest = m
	return nil
}

// writeFileSynced writes dir/name through a temporary file and a rename,
// syncing both the file and the folder, so that a crash leaves either the
// old file or the new one.
func writeFileSynced(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncPath(dir)
}

// Dependents lists the backups whose disk builds directly on b's image of
// that disk.
func (s *Store) Dependents(b *Backup, disk string) []*Backup {
	var out []*Backup
	for _, x := range s.all() {
		if d, ok := x.Disk(disk); ok && d.Level == Incremental && d.Backing == b.Name() {
			out = append(out, x)
		}
	}
	return out
}

// BackingNames lists the backing file names that b's image of disk d may
// record: the one its manifest names, and, while the backup it builds on is
// being removed, the one that backup builds on (the removal rebases b onto
// it before b's manifest says so).
func (s *Store) BackingNames(b *Backup, d Disk) []string {
	if d.Level != Incremental {
		return nil
	}
	base, err := s.find(d.Backing)
	if err != nil {
		return nil
	}
	bd, _ := base.Disk(d.Name)
	names := []string{BackingName(base, bd)}
	if s.Removing == base && bd.Level == Incremental {
		if below, err := s.find(bd.Backing); err == nil {
			if bbd, ok := below.Disk(d.Name); ok {
				names = append(names, BackingName(below, bbd))
			}
		}
	}
	return names
}

// LockReading takes dir for reading its backups' images (verify, restore):
// any number of readers at once, but not while a prune rewrites images
// in place (RewriteLock). It is a lock on the folder itself, so that a
// reader writes nothing into it.
func LockReading(dir string) (unlock func(), err error) {
	f, err := LockReadingFile(dir)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// LockReadingFile is LockReading for a reader that outlives the command:
// the lock is held as long as any process keeps the returned file open,
// so a daemon that inherits it holds it until it exits (vbackup mount).
func LockReadingFile(dir string) (*os.File, error) {
	return flockDir(dir, syscall.LOCK_SH, "a prune is rewriting the backups in %s; wait for it to finish")
}

// LockRewriting takes dir for rewriting backups' images in place (a prune's
// merges, or the completion of one): no reader may be reading them.
func LockRewriting(dir string) (unlock func(), err error) {
	return lockFolder(dir, syscall.LOCK_EX, "another vbackup command (verify, restore, mount, serve) is reading the backups in %s; wait for it to finish, or end a mount with 'vbackup umount'")
}

func lockFolder(dir string, how int, busy string) (func(), error) {
	f, err := flockDir(dir, how, busy)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

func flockDir(dir string, how int, busy string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf(busy, dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return f, nil
}
