package chain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Pending is a backup being written, in a hidden folder of the store.
type Pending struct {
	store *Store
	name  string
	dir   string
	done  bool
}

// Begin starts backup name. Nothing under that name may exist yet: a
// backup is never written over.
func (s *Store) Begin(name string) (*Pending, error) {
	final := filepath.Join(s.Dir, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("%s exists already; vbackup never writes over a backup", final)
	}
	dir := filepath.Join(s.Dir, "."+name+partialSuffix)
	// Backups hold whole disks: for the owner's eyes only.
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	return &Pending{store: s, name: name, dir: dir}, nil
}

// Taken reports whether name is used in the store: by a backup, or by an
// unfinished one an interrupted run left. The latter's name stays taken
// until the leftover is removed, and is best never used again: the
// bitmaps of its checkpoint may survive in the images (a shut-off backup
// killed after adding them; the domain started since loaded them), and a
// new checkpoint of the same name would fail on them.
func (s *Store) Taken(name string) bool {
	for _, p := range []string{name, "." + name + partialSuffix} {
		if _, err := os.Lstat(filepath.Join(s.Dir, p)); err == nil {
			return true
		}
	}
	return false
}

// Dir is the folder to write the backup's images into.
func (p *Pending) Dir() string { return p.dir }

// Backing is the name to record in an image of this backup for the file of
// disk d in backup b.
func (p *Pending) Backing(b *Backup, d Disk) string { return BackingName(b, d) }

// BackingName is the backing file name an image in a backup of this folder
// records for the file of disk d in backup b: relative, so that the folder
// can be moved as a whole.
func BackingName(b *Backup, d Disk) string {
	return filepath.Join("..", filepath.Base(b.Dir), d.File)
}

// Commit writes m's manifest and definitions beside the images, puts every
// file on stable storage, and makes the backup appear under its name. Until
// the rename, the store holds no trace of it; once it is done, the backup
// is returned, with an error only if the folder could not be synced.
func (p *Pending) Commit(m Manifest) (*Backup, error) {
	m.Format = FormatVersion
	m.Seq = 1
	if last := p.store.Last(); last != nil {
		m.Seq = last.Seq + 1
	}
	if m.Checkpoint.Name != p.name {
		return nil, fmt.Errorf("manifest of checkpoint %q committed as backup %q", m.Checkpoint.Name, p.name)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("backup %s: %w", p.name, err)
	}
	data, err := m.marshal()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		ManifestFile:     data,
		"checkpoint.xml": []byte(m.Checkpoint.XML),
		"domain.xml":     []byte(m.Domain.XML),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(p.dir, name), content, 0o600); err != nil {
			return nil, err
		}
	}
	for _, d := range m.Disks {
		if _, err := os.Stat(filepath.Join(p.dir, d.File)); err != nil {
			return nil, fmt.Errorf("backup %s: disk %s: %w", p.name, d.Name, err)
		}
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if err := syncPath(filepath.Join(p.dir, e.Name())); err != nil {
			return nil, err
		}
	}
	if err := syncPath(p.dir); err != nil {
		return nil, err
	}
	final := filepath.Join(p.store.Dir, p.name)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("%s appeared while the backup was written; vbackup never writes over a backup", final)
	}
	if err := os.Rename(p.dir, final); err != nil {
		return nil, err
	}
	p.done = true
	b := &Backup{Manifest: m, Dir: final}
	p.store.Backups = append(p.store.Backups, b)
	// The backup is in place: a failure to sync the folder is reported with
	// it, never as a backup that failed.
	if err := syncPath(p.store.Dir); err != nil {
		return b, fmt.Errorf("backup %s is in place, but syncing %s failed: %w", p.name, p.store.Dir, err)
	}
	return b, nil
}

// Abort removes what was written; after a Commit it does nothing.
func (p *Pending) Abort() error {
	if p.done {
		return nil
	}
	p.done = true
	return os.RemoveAll(p.dir)
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
