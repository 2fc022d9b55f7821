package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// ManifestFile is the manifest's name in a backup's folder.
const ManifestFile = "manifest.json"

const (
	lockFile      = ".vbackup.lock"
	partialSuffix = ".partial"
)

// Backup is one complete backup in a Store.
type Backup struct {
	Manifest
	Dir string // the backup's folder
}

// Name is the backup's name: its checkpoint's, and its folder's.
func (b *Backup) Name() string { return b.Checkpoint.Name }

// File is the path of a disk's image in this backup.
func (b *Backup) File(d Disk) string { return filepath.Join(b.Dir, d.File) }

// Store is the backups in a folder, oldest first.
type Store struct {
	Dir     string
	Backups []*Backup
	// Removing is a backup that a prune was removing when it stopped: not
	// listed, no longer what its manifest says, kept only while later
	// backups still read through its files. The next prune or backup
	// completes its removal.
	Removing *Backup
	Plan     []Planned // the merges of its removal
	// staleRemoval is a removal record whose backup is gone already.
	staleRemoval bool
}

// Holds reports whether dir holds a backup, or a removal that an
// interrupted prune left, without reading every manifest: what a command
// asks before it takes the folder's lock and opens the store.
func Holds(dir string) bool {
	if _, err := os.Lstat(filepath.Join(dir, removalFile)); err == nil {
		return true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, err := os.Lstat(filepath.Join(dir, e.Name(), ManifestFile)); err == nil {
			return true
		}
	}
	return false
}

// Open reads the backups in dir. A folder that does not exist holds none. A
// manifest that cannot be read, or a chain that points at a missing backup,
// is an error naming it: every later backup would depend on it.
func Open(dir string) (*Store, error) {
	s := &Store{Dir: dir}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	// Read side by side: on a cold cache each manifest is a few reads of
	// its own, and a nightly prune of years of backups opens them all.
	// The first error in folder order is the one said.
	data, errs := make([][]byte, len(names)), make([]error, len(names))
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(len(names), 8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				data[i], errs[i] = os.ReadFile(filepath.Join(dir, names[i], ManifestFile))
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	for i, name := range names {
		path := filepath.Join(dir, name, ManifestFile)
		if errors.Is(errs[i], os.ErrNotExist) {
			continue // not a backup: vbackup never leaves a folder without one under a backup's name
		}
		if errs[i] != nil {
			return nil, errs[i]
		}
		b := &Backup{Dir: filepath.Join(dir, name)}
		if err := json.Unmarshal(data[i], &b.Manifest); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := b.check(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if b.Name() != name {
			return nil, fmt.Errorf("%s: it describes backup %q, not %q (was the folder renamed?)", path, b.Name(), name)
		}
		s.Backups = append(s.Backups, b)
	}
	// By sequence: a clock set back must not put a backup before the one it
	// builds on.
	slices.SortStableFunc(s.Backups, func(a, b *Backup) int {
		if a.Seq != b.Seq {
			return a.Seq - b.Seq
		}
		return a.Time.Compare(b.Time)
	})
	if err := s.checkLinks(); err != nil {
		return nil, err
	}
	removal, err := readRemoval(dir)
	if err != nil {
		return nil, err
	}
	if removal != nil {
		s.staleRemoval = true
		for i, b := range s.Backups {
			if b.Name() == removal.Backup {
				s.Removing, s.Plan, s.staleRemoval = b, removal.Merges, false
				s.Backups = append(s.Backups[:i:i], s.Backups[i+1:]...)
				break
			}
		}
	}
	return s, nil
}

// all is every backup whose files are in the folder, the one being removed
// included, oldest first.
func (s *Store) all() []*Backup {
	if s.Removing == nil {
		return s.Backups
	}
	out := append([]*Backup(nil), s.Backups...)
	i, _ := slices.BinarySearchFunc(out, s.Removing, func(a, b *Backup) int { return a.Seq - b.Seq })
	return slices.Insert(out, i, s.Removing)
}

// find is Find among all the backups whose files are here: a chain may
// still read through the one being removed.
func (s *Store) find(name string) (*Backup, error) {
	if s.Removing != nil && s.Removing.Name() == name {
		return s.Removing, nil
	}
	return s.Find(name)
}

// checkLinks makes sure every backup is of one domain and that every
// incremental disk builds on an earlier backup holding the same disk.
func (s *Store) checkLinks() error {
	seen := map[string]*Backup{}
	for _, b := range s.Backups {
		if first := s.Backups[0]; b.Domain.UUID != first.Domain.UUID {
			return fmt.Errorf("%s holds backups of two domains: %s (%s) and %s (%s); keep one domain per folder",
				s.Dir, first.Domain.Name, first.Domain.UUID, b.Domain.Name, b.Domain.UUID)
		}
		for _, d := range b.Disks {
			if d.Level != Incremental {
				continue
			}
			base, ok := seen[d.Backing]
			if !ok {
				return fmt.Errorf("backup %s: disk %s builds on backup %s, which is not in %s", b.Name(), d.Name, d.Backing, s.Dir)
			}
			if _, ok := base.Disk(d.Name); !ok {
				return fmt.Errorf("backup %s: disk %s builds on backup %s, which has no disk %s", b.Name(), d.Name, d.Backing, d.Name)
			}
		}
		seen[b.Name()] = b
	}
	return nil
}

// Last is the newest backup, or nil.
func (s *Store) Last() *Backup {
	if len(s.Backups) == 0 {
		return nil
	}
	return s.Backups[len(s.Backups)-1]
}

// Find returns the backup named name, or the newest for "latest" or "".
func (s *Store) Find(name string) (*Backup, error) {
	if len(s.Backups) == 0 {
		return nil, fmt.Errorf("%s holds no backups yet; make one with 'vbackup backup DOMAIN --to %s'", s.Dir, s.Dir)
	}
	if name == "" || name == "latest" {
		return s.Last(), nil
	}
	var names []string
	for _, b := range s.Backups {
		if b.Name() == name {
			return b, nil
		}
		names = append(names, b.Name())
	}
	return nil, fmt.Errorf("%s has no backup %q; it holds %s (or use latest)", s.Dir, name, strings.Join(names, ", "))
}

// Chain lists, for one disk of b, the backups its image depends on, from
// the full one to b itself.
func (s *Store) Chain(b *Backup, disk string) ([]*Backup, error) {
	var out []*Backup
	for cur := b; ; {
		d, ok := cur.Disk(disk)
		if !ok {
			return nil, fmt.Errorf("backup %s has no disk %s", cur.Name(), disk)
		}
		out = append(out, cur)
		if d.Level == Full {
			break
		}
		next, err := s.find(d.Backing)
		if err != nil {
			return nil, fmt.Errorf("backup %s, disk %s: %w", cur.Name(), disk, err)
		}
		cur = next
	}
	slices.Reverse(out)
	return out, nil
}

// Lock takes DIR for one vbackup command at a time (creating DIR if
// needed); unlock releases it. It fails at once when another holds it.
func Lock(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another vbackup command is writing %s; wait for it to finish", dir)
		}
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// Leftovers removes what interrupted backups left in the store's folder
// (hidden .NAME.partial folders, which no manifest references) and returns
// their names. Call it only while holding the lock.
func (s *Store) Leftovers() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() && strings.HasPrefix(n, ".") && strings.HasSuffix(n, partialSuffix) {
			if err := os.RemoveAll(filepath.Join(s.Dir, n)); err != nil {
				return removed, err
			}
			removed = append(removed, strings.TrimSuffix(strings.TrimPrefix(n, "."), partialSuffix))
		}
	}
	return removed, nil
}
