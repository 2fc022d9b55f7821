package fetch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFolders takes an exclusive lock on each folder the disks are written
// into, for the whole fetch, so that two vbackup commands writing the same
// folder (a backup-fetch run twice, two restores) cannot take each other's
// .partial files or names. A folder whose filesystem has no locks (flock
// fails other than by being held) is written without one.
func lockFolders(disks []Disk) (unlock func(), err error) {
	var held []*os.File
	unlock = func() {
		for _, f := range held {
			f.Close()
		}
	}
	seen := map[string]bool{}
	for _, d := range disks {
		dir := filepath.Dir(d.Path)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		f, err := os.Open(dir)
		if err != nil {
			unlock()
			return nil, err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			unlock()
			return nil, fmt.Errorf("another vbackup command is writing into %s; wait for it to finish, or choose another folder", dir)
		}
		if err != nil {
			f.Close()
			continue
		}
		held = append(held, f)
	}
	return unlock, nil
}

// errExists is what place returns when the final name is taken.
var errExists = errors.New("exists already")

// place gives a complete file its final name, never taking the name of a
// file that appeared meanwhile.
func place(partial, path string) error {
	err := renameNoReplace(partial, path)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s %w (it appeared during the fetch); vbackup never writes over a file: the copy is removed", path, errExists)
	}
	return err
}

// checkedRename renames old to new if new does not exist when checked.
func checkedRename(old, new string) error {
	if _, err := os.Lstat(new); err == nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: os.ErrExist}
	}
	return os.Rename(old, new)
}
