package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Entry is one file of a backed-up filesystem, as ls shows it.
type Entry struct {
	Name    string      `json:"name"`
	Mode    fs.FileMode `json:"-"`
	Perm    string      `json:"mode"` // as ls -l writes it: drwxr-xr-x
	Size    int64       `json:"size"`
	ModTime time.Time   `json:"mtime"`
	Target  string      `json:"target,omitempty"` // a symbolic link's
}

// Read mounts the filesystem req names in a private folder, hands fn the
// filesystem's root and unmounts it when fn returns, whatever happened:
// ls and cat leave no mount behind. req.Mountpoint is ignored.
func Read(ctx context.Context, req MountRequest, fn func(root *os.Root, m Mounted) error) (err error) {
	dir, err := os.MkdirTemp("", "vbackup-read-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	req.Mountpoint, req.private = dir, true
	m, err := Mount(ctx, req)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := m.undo(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("unmounting %s: %w; 'vbackup umount %s' tries again", dir, uerr, dir))
		}
	}()
	// The guest's absolute symbolic links must resolve inside its
	// filesystem, never to the host's own files: os.Root refuses to leave
	// it.
	root, err := os.OpenRoot(m.Mountpoint)
	if err != nil {
		return err
	}
	defer root.Close()
	return fn(root, m)
}

// guestPath turns a path in the guest's filesystem ("/etc/hosts") into
// one under its root ("etc/hosts").
func guestPath(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// List returns the entries of the folder p (or p itself, when it is not a
// folder), sorted by name.
func List(root *os.Root, p string) ([]Entry, error) {
	gp := guestPath(p)
	fi, err := root.Lstat(gp)
	if err != nil {
		return nil, guestErr(p, err)
	}
	if !fi.IsDir() {
		return []Entry{entry(root, path.Dir(gp), fi)}, nil
	}
	d, err := root.Open(gp)
	if err != nil {
		return nil, guestErr(p, err)
	}
	defer d.Close()
	des, err := d.ReadDir(-1)
	if err != nil {
		return nil, guestErr(p, err)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			return nil, guestErr(path.Join(p, de.Name()), err)
		}
		out = append(out, entry(root, gp, fi))
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func entry(root *os.Root, dir string, fi fs.FileInfo) Entry {
	e := Entry{Name: fi.Name(), Mode: fi.Mode(), Perm: lsMode(fi.Mode()), Size: fi.Size(), ModTime: fi.ModTime()}
	if fi.Mode()&fs.ModeSymlink != 0 {
		e.Target, _ = root.Readlink(path.Join(dir, fi.Name()))
	}
	return e
}

// Open opens the regular file p for reading.
func Open(root *os.Root, p string) (*os.File, error) {
	gp := guestPath(p)
	f, err := root.Open(gp)
	if err != nil {
		return nil, guestErr(p, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, guestErr(p, err)
	}
	if fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is a folder: list it with 'vbackup ls'", p)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", p, fi.Mode().Type())
	}
	return f, nil
}

func guestErr(p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: no such file or folder in the backup", p)
	case strings.Contains(err.Error(), "path escapes from parent"):
		return fmt.Errorf("%s: a symbolic link on the way leads out of the backed-up filesystem (an absolute link, read on the host, would not be the guest's file); give the link's target instead", p)
	}
	return fmt.Errorf("%s: %w", p, err)
}

// lsMode writes a mode as ls -l does ("drwxr-xr-x", "-rwsr-xr-x",
// "drwxrwxrwt"), which Go's FileMode.String does not for the special bits.
func lsMode(m fs.FileMode) string {
	b := []byte("?rwxrwxrwx")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&fs.ModeSymlink != 0:
		b[0] = 'l'
	case m&fs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&fs.ModeSocket != 0:
		b[0] = 's'
	case m&fs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&fs.ModeDevice != 0:
		b[0] = 'b'
	default:
		b[0] = '-'
	}
	for i := range 9 {
		if m&(1<<uint(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	special := func(bit fs.FileMode, pos int, set, unset byte) {
		if m&bit != 0 {
			if b[pos] == '-' {
				b[pos] = unset
			} else {
				b[pos] = set
			}
		}
	}
	special(fs.ModeSetuid, 3, 's', 'S')
	special(fs.ModeSetgid, 6, 's', 'S')
	special(fs.ModeSticky, 9, 't', 'T')
	return string(b)
}
