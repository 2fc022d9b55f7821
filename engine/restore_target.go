package engine

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/progress"
	"vbackup/xmlgen"
)

// target is a disk restored onto something that exists already: a block
// device (an LV, a partition) or a file, written with the disk's bytes
// from its start (raw); a target larger than the disk keeps what lies
// past the disk's end.
type target struct {
	disk, path string
	block      bool
	size       uint64 // of the target
	want       uint64 // the disk's
}

// checkTargets checks every --disk NAME=TARGET before anything is written.
func checkTargets(b *chain.Backup, targets map[string]string) ([]target, error) {
	var out []target
	seen := map[string]string{}
	var store *storeFiles
	for _, d := range b.Disks {
		path, ok := targets[d.Name]
		if !ok {
			continue
		}
		t := target{disk: d.Name, path: path, want: d.VirtualSize}
		real, err := resolved(path)
		if err != nil {
			return nil, fmt.Errorf("--disk %s=%s: %w; a target must exist (a block device or a file)", d.Name, path, err)
		}
		if other, ok := seen[real]; ok {
			return nil, fmt.Errorf("--disk %s=%s: disk %s goes there already; give each disk its own target", d.Name, path, other)
		}
		seen[real] = d.Name
		fi, err := os.Stat(real)
		if err != nil {
			return nil, err
		}
		if store == nil {
			if store, err = filesOf(filepath.Dir(b.Dir)); err != nil {
				return nil, err
			}
		}
		if in := store.holds(real, fi); in != "" {
			return nil, fmt.Errorf("--disk %s=%s is part of the backup folder %s (the same file as %s); vbackup never writes there, so nothing was written: give a target outside it",
				d.Name, path, store.dir, in)
		}
		switch {
		case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
			t.block = true
			f, err := os.Open(real)
			if err != nil {
				return nil, fmt.Errorf("--disk %s=%s: %w", d.Name, path, err)
			}
			end, err := f.Seek(0, io.SeekEnd)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("--disk %s=%s: its size: %w", d.Name, path, err)
			}
			t.size = uint64(end)
		case fi.Mode().IsRegular():
			t.size = uint64(fi.Size())
		default:
			return nil, fmt.Errorf("--disk %s=%s is neither a block device nor a file", d.Name, path)
		}
		if t.size < t.want {
			return nil, fmt.Errorf("--disk %s=%s: the target holds %s (%d bytes), less than disk %s's %s (%d bytes); nothing was written: give a target at least that large",
				d.Name, path, progress.Capacity(t.size), t.size, d.Name, progress.Capacity(t.want), t.want)
		}
		out = append(out, t)
	}
	for name := range targets {
		if _, ok := b.Disk(name); !ok {
			return nil, fmt.Errorf("--disk %s=%s: backup %s has no disk %s", name, targets[name], b.Name(), name)
		}
	}
	return out, nil
}

// resolved is path made absolute, every symbolic link in it followed.
func resolved(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// storeFiles is a backup folder, resolved, and every file in it.
type storeFiles struct {
	dir   string
	files []string
	infos []os.FileInfo
}

// filesOf lists the files of the backup folder dir, as the files they
// are (links followed): a target may name one of them by another path
// (a hard link, a link to a folder above it) that no comparison of paths
// would catch.
func filesOf(dir string) (*storeFiles, error) {
	real, err := resolved(dir)
	if err != nil {
		return nil, fmt.Errorf("the backup folder %s: %w", dir, err)
	}
	s := &storeFiles{dir: real}
	err = filepath.WalkDir(real, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil // a dangling link is no file to write over
		}
		s.files, s.infos = append(s.files, p), append(s.infos, fi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the backup folder %s: %w", dir, err)
	}
	return s, nil
}

// holds names the file of the folder that real (resolved, with fi its
// stat) is, or lies in; "" if none.
func (s *storeFiles) holds(real string, fi os.FileInfo) string {
	if under(real, s.dir) {
		return real
	}
	for i, f := range s.infos {
		if os.SameFile(f, fi) {
			return s.files[i]
		}
	}
	return ""
}

// writeTarget writes a disk's chain onto its target: qemu-img writes
// the data, and zeroes where the disk reads zeroes (punching holes in a
// file, which stays thin; discarding or zeroing on a device).
func writeTarget(ctx context.Context, b *chain.Backup, t target) error {
	md, _ := b.Disk(t.disk)
	if _, err := qemuImg(ctx, "", "convert", "-n", "-f", "qcow2", "-O", "raw", b.File(md), t.path); err != nil {
		return fmt.Errorf("writing disk %s onto %s: %w", t.disk, t.path, err)
	}
	f, err := os.OpenFile(t.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// checkTarget reads a target back over the disk's length and compares it
// with the manifest's checksum.
func checkTarget(ctx context.Context, b *chain.Backup, t target) error {
	md, _ := b.Disk(t.disk)
	want, err := contentsum.Parse(md.Checksum)
	if err != nil {
		return err
	}
	var got contentsum.Sum
	if !t.block && t.size == t.want {
		got, err = contentsum.File(ctx, t.path, "raw", contentsum.Options{})
	} else {
		var f *os.File
		if f, err = os.Open(t.path); err == nil {
			got, err = contentsum.OfReader(f, t.want)
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("reading back %s: %w", t.path, err)
	}
	if !got.Equal(want) {
		return fmt.Errorf("disk %s as written onto %s is not the disk of backup %s (content %s, manifest %s): 'vbackup verify --from %s' names a damaged backup",
			t.disk, t.path, b.Name(), got, want, filepath.Dir(b.Dir))
	}
	return nil
}

// restoreTargets writes and checks each target, telling of each.
func restoreTargets(ctx context.Context, b *chain.Backup, targets []target, notes progress.Notifier) ([]RestoredDisk, error) {
	var out []RestoredDisk
	for _, t := range targets {
		if err := context.Cause(ctx); err != nil {
			return out, err
		}
		notes.Infof("Writing disk %s onto %s (%s)", t.disk, t.path, progress.Capacity(t.want))
		if err := writeTarget(ctx, b, t); err != nil {
			return out, err
		}
		if err := checkTarget(ctx, b, t); err != nil {
			return out, err
		}
		if t.size > t.want {
			notes.Notef("note: %s is %s larger than disk %s; what lies past the disk's end was left as it was", t.path, progress.Capacity(t.size-t.want), t.disk)
		}
		out = append(out, RestoredDisk{Name: t.disk, Path: t.path, Size: t.want})
	}
	return out, nil
}

// targetImages are the targets as a restored domain's disks.
func targetImages(targets []target) map[string]xmlgen.RestoredDisk {
	m := map[string]xmlgen.RestoredDisk{}
	for _, t := range targets {
		m[t.disk] = xmlgen.RestoredDisk{Path: t.path, Format: "raw", Block: t.block}
	}
	return m
}
