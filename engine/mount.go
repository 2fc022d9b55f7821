package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"vbackup/chain"
	"vbackup/disklayout"
	"vbackup/progress"
	"vbackup/qsd"
)

// MountRequest is one filesystem of a backup point to mount read-only.
type MountRequest struct {
	From       string // the backup folder
	At         string // a backup name, or latest
	Disk       string // "" when the backup has one disk
	Partition  int    // 0: the disk's one filesystem
	Mountpoint string // an empty folder
	// Records is where mount records go (DefaultMountRecords when "").
	Records string
	private bool // Mountpoint is Read's own folder
}

// Mounted is a mount vbackup made, as its record says.
type Mounted struct {
	Mountpoint string    `json:"mountpoint"`
	Folder     string    `json:"folder"`
	Backup     string    `json:"backup"`
	Disk       string    `json:"disk"`
	Partition  int       `json:"partition,omitempty"` // 0: the whole disk
	FSType     string    `json:"fstype"`
	Label      string    `json:"label,omitempty"`
	Size       int64     `json:"size"`
	Dirty      bool      `json:"dirty"` // not cleanly frozen: its journal was replayed into the overlay
	Time       time.Time `json:"time"`

	// How to undo it, filled in as each part is set up, so that the
	// record of a mount stopped half-way still undoes what was done.
	PID  int    `json:"pid,omitempty"`  // the qemu-storage-daemon
	Loop string `json:"loop,omitempty"` // the loop device
	// Private says the mount point is ls's or cat's own folder, removed
	// with the mount.
	Private bool `json:"private,omitempty"`
	// Driver is the FUSE program that mounted it, "" for the kernel.
	Driver  string `json:"driver,omitempty"`
	Mounted bool   `json:"mounted"`

	record string // the record's folder
}

// DefaultMountRecords is where a mount's record, its overlay and its
// exported disk file live: under /run, which a reboot clears as it clears
// the mounts themselves.
const DefaultMountRecords = "/run/vbackup/mounts"

const (
	recordFile  = "mount.json"
	overlayFile = "overlay.qcow2" // the throwaway writes (a journal replayed)
	diskFile    = "disk"          // the FUSE export of the chain under the overlay
	pidFile     = "qsd.pid"       // the daemon's
)

// Mount makes one filesystem of a disk at a backup point visible,
// read-only, at req.Mountpoint, and leaves it so until Unmount. The
// chain is read through a throwaway overlay in the record's folder, so
// that a journal the kernel replays never reaches the backup; the
// folder stays locked for reading (prune waits) while the mount lives.
// Nothing is left behind when it fails.
func Mount(ctx context.Context, req MountRequest) (m Mounted, err error) {
	if os.Geteuid() != 0 {
		return m, errors.New("mounting a backup needs root: it sets up a loop device and mounts it")
	}
	if req.Records == "" {
		req.Records = DefaultMountRecords
	}
	if abs, err := filepath.Abs(req.Mountpoint); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		if prev, err := findMount(req.Records, abs); err != nil {
			return m, err
		} else if prev != nil {
			return m, fmt.Errorf("%s is already a vbackup mount (backup %s, disk %s); 'vbackup umount %s' first", abs, prev.Backup, prev.Disk, abs)
		}
	}
	mp, err := checkMountpoint(req.Mountpoint)
	if err != nil {
		return m, err
	}
	if _, err := OpenFolder(req.From); err != nil {
		return m, err
	}
	lock, err := chain.LockReadingFile(req.From)
	if err != nil {
		return m, err
	}
	defer lock.Close() // the daemon keeps its own copy
	store, err := OpenFolder(req.From)
	if err != nil {
		return m, err
	}
	b, err := store.Find(req.At)
	if err != nil {
		return m, err
	}
	disk, err := pickDisk(b, req.Disk)
	if err != nil {
		return m, err
	}
	folder, err := filepath.Abs(req.From)
	if err != nil {
		return m, err
	}
	top, err := filepath.Abs(b.File(disk))
	if err != nil {
		return m, err
	}
	m = Mounted{Mountpoint: mp, Folder: folder, Backup: b.Name(), Disk: disk.Name, Time: time.Now().UTC(), Private: req.private}
	if err := os.MkdirAll(req.Records, 0o700); err != nil {
		return m, fmt.Errorf("making the mount records folder: %w", err)
	}
	if m.record, err = os.MkdirTemp(req.Records, "m-"); err != nil {
		return m, err
	}
	defer func() {
		if err != nil {
			if uerr := m.undo(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing the mount: %w; 'vbackup umount %s' tries again", uerr, mp))
			}
		}
	}()
	if err := m.save(); err != nil {
		return m, err
	}
	overlay := filepath.Join(m.record, overlayFile)
	if err := qsd.CreateOverlay(ctx, overlay, disk.VirtualSize); err != nil {
		return m, err
	}
	f, err := qsd.StartFuse(ctx, qsd.FuseRequest{
		Image:   qsd.Image{Path: top, Format: disk.Format},
		Overlay: overlay, File: filepath.Join(m.record, diskFile),
		PIDFile: filepath.Join(m.record, pidFile), LogFile: filepath.Join(m.record, "qsd.log"),
		Inherit: []*os.File{lock},
	})
	if err != nil {
		return m, fmt.Errorf("backup %s, disk %s: %w", b.Name(), disk.Name, err)
	}
	m.PID = f.PID
	if err := m.save(); err != nil {
		return m, err
	}
	vol, err := pickVolume(f.File, int64(disk.VirtualSize), b.Name(), disk.Name, req.Partition)
	if err != nil {
		return m, err
	}
	m.FSType, m.Label, m.Size = vol.FS.Type, vol.FS.Label, vol.Size
	if vol.Partition != nil {
		m.Partition = vol.Partition.Number
	}
	// A read-only device first: a clean filesystem is then read as it is
	// (xfs writes to a writable device even when mounted read-only). A
	// journal that must be replayed (ext3/4 say so in the superblock; xfs
	// refuses the read-only device) needs a writable device, though the
	// filesystem is still mounted read-only: the replay goes to the overlay.
	writable := vol.FS.NeedsRecovery
	for {
		err := m.mountOn(ctx, f.File, vol, mp, writable)
		if err == nil {
			break
		}
		if writable {
			return m, fmt.Errorf("backup %s, disk %s, %s: %w", b.Name(), disk.Name, vol.Describe(progress.Capacity), err)
		}
		writable = true
	}
	m.Dirty = writable
	return m, m.save()
}

// mountOn sets up a loop device on the volume of the exported disk and
// mounts it on mp; what failed is undone, so that it can be tried again.
func (m *Mounted) mountOn(ctx context.Context, file string, vol disklayout.Volume, mp string, writable bool) error {
	args := []string{"--find", "--show", "--offset", strconv.FormatInt(vol.Start, 10), "--sizelimit", strconv.FormatInt(vol.Size, 10)}
	if !writable {
		args = append(args, "--read-only")
	}
	out, err := runTool(ctx, "losetup", append(args, file)...)
	if err != nil {
		return err
	}
	m.Loop = strings.TrimSpace(out)
	if err := m.save(); err != nil {
		return err
	}
	if err := mountVolume(ctx, m, vol.FS, mp); err != nil {
		if _, derr := runTool(context.WithoutCancel(ctx), "losetup", "--detach", m.Loop); derr != nil {
			return errors.Join(err, derr)
		}
		m.Loop, m.Driver = "", ""
		return errors.Join(err, m.save())
	}
	m.Mounted = true
	return nil
}

// mountVolume mounts the loop device on mp with the kernel's driver, or
// for vfat on a kernel without one (this project's test machines: a
// kernel with no modules) with fusefat, a FUSE driver.
func mountVolume(ctx context.Context, m *Mounted, fs disklayout.Filesystem, mp string) error {
	if fs.Type == "vfat" && !kernelHas(ctx, "vfat") {
		if _, err := exec.LookPath("fusefat"); err != nil {
			return errors.New("this kernel has no vfat driver, and fusefat (Debian's fusefat package) is not installed to mount it in user space")
		}
		m.Driver = "fusefat"
		// fusefat prints its findings on stdout: not ours to pass on.
		_, err := runTool(ctx, "fusefat", "-o", "ro", m.Loop, mp)
		return err
	}
	_, err := runTool(ctx, "mount", "-t", fs.MountType(), "-o", mountOptions(fs), m.Loop, mp)
	return err
}

// kernelHas reports whether the kernel mounts filesystems of type name,
// loading its module if need be.
func kernelHas(ctx context.Context, name string) bool {
	has := func() bool {
		data, _ := os.ReadFile("/proc/filesystems")
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
				return true
			}
		}
		return false
	}
	if has() {
		return true
	}
	exec.CommandContext(ctx, "modprobe", "-q", name).Run()
	return has()
}

// mountOptions: read-only, and nothing of the guest's may act on the host
// (set-uid programs, device nodes).
func mountOptions(fs disklayout.Filesystem) string {
	o := "ro,nosuid,nodev,noexec"
	if fs.Type == "xfs" {
		// The guest's own filesystem may be mounted here too, or another
		// point of the same chain: the same UUID.
		o += ",nouuid"
	}
	return o
}

func pickDisk(b *chain.Backup, name string) (chain.Disk, error) {
	var names []string
	for _, d := range b.Disks {
		names = append(names, d.Name)
	}
	if name == "" {
		if len(b.Disks) == 1 {
			return b.Disks[0], nil
		}
		return chain.Disk{}, fmt.Errorf("backup %s has disks %s: pick one with --disk", b.Name(), strings.Join(names, ", "))
	}
	d, ok := b.Disk(name)
	if !ok {
		return chain.Disk{}, fmt.Errorf("backup %s has no disk %q; its disks are %s", b.Name(), name, strings.Join(names, ", "))
	}
	return d, nil
}

// pickVolume reads the exported disk's layout and chooses the volume to
// mount: partition n, or the one mountable filesystem.
func pickVolume(file string, size int64, backup, disk string, n int) (disklayout.Volume, error) {
	f, err := os.Open(file)
	if err != nil {
		return disklayout.Volume{}, err
	}
	defer f.Close()
	table, vols, err := disklayout.Read(f, size)
	if err != nil {
		return disklayout.Volume{}, fmt.Errorf("backup %s, disk %s: %w", backup, disk, err)
	}
	where := fmt.Sprintf("backup %s, disk %s", backup, disk)
	if n > 0 {
		if table.Kind == "" {
			return disklayout.Volume{}, fmt.Errorf("%s has no partition table (it holds %s): leave out --partition", where, describeAll(vols))
		}
		var nums []string
		for _, v := range vols {
			if v.Partition.Number == n {
				if !v.FS.Mountable {
					return v, fmt.Errorf("%s: vbackup cannot mount %s: it mounts ext2/3/4, xfs and vfat", where, v.Describe(progress.Capacity))
				}
				return v, nil
			}
			nums = append(nums, strconv.Itoa(v.Partition.Number))
		}
		return disklayout.Volume{}, fmt.Errorf("%s has no partition %d; its %s partitions are %s:\n%s", where, n, strings.ToUpper(table.Kind), strings.Join(nums, ", "), volumeTable(vols))
	}
	var ok []disklayout.Volume
	for _, v := range vols {
		if v.FS.Mountable {
			ok = append(ok, v)
		}
	}
	switch {
	case len(ok) == 1:
		return ok[0], nil
	case len(ok) == 0 && len(vols) == 0:
		return disklayout.Volume{}, fmt.Errorf("%s holds no filesystem vbackup can mount (ext2/3/4, xfs, vfat): found neither a filesystem nor a partition table on it (%s)", where, progress.Capacity(uint64(size)))
	case len(ok) == 0:
		return disklayout.Volume{}, fmt.Errorf("%s holds no filesystem vbackup can mount (ext2/3/4, xfs, vfat); found %s", where, describeAll(vols))
	}
	return disklayout.Volume{}, fmt.Errorf("%s holds %d filesystems; pick one with --partition N:\n%s", where, len(ok), volumeTable(vols))
}

func describeAll(vols []disklayout.Volume) string {
	var s []string
	for _, v := range vols {
		s = append(s, v.Describe(progress.Capacity))
	}
	return strings.Join(s, "; ")
}

// volumeTable lists partitions as the errors show them: number, type,
// size, label.
func volumeTable(vols []disklayout.Volume) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-9s  %-12s  %12s  %s\n", "PARTITION", "TYPE", "SIZE", "LABEL")
	for _, v := range vols {
		typ := v.FS.Type
		if typ == "" {
			typ = "-"
		}
		num := "-"
		if v.Partition != nil {
			num = strconv.Itoa(v.Partition.Number)
		}
		fmt.Fprintf(&b, "  %-9s  %-12s  %12s  %s\n", num, typ, progress.Capacity(uint64(v.Size)), v.FS.Label)
	}
	return strings.TrimRight(b.String(), "\n")
}

// checkMountpoint returns the canonical path of an empty folder that
// nothing is mounted on.
func checkMountpoint(p string) (string, error) {
	if p == "" {
		return "", errors.New("no mount point given")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mount point %s does not exist: create an empty folder there (mkdir %s)", abs, abs)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("mount point %s is not a folder: give an empty folder", abs)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return "", err
	}
	if len(entries) > 0 {
		var names []string
		for _, e := range entries[:min(len(entries), 3)] {
			names = append(names, e.Name())
		}
		more := ""
		if len(entries) > 3 {
			more = ", ..."
		}
		return "", fmt.Errorf("mount point %s is not empty (it holds %s%s): give an empty folder, so that nothing in it is hidden", abs, strings.Join(names, ", "), more)
	}
	if mounted, err := isMountpoint(abs); err != nil {
		return "", err
	} else if mounted {
		return "", fmt.Errorf("mount point %s has a filesystem mounted on it already: give an empty folder that is not a mount point", abs)
	}
	return abs, nil
}

// isMountpoint reports whether something is mounted on path, as the
// kernel's mount table says.
func isMountpoint(path string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true, nil
		}
	}
	return false, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// runTool runs a system tool and returns its standard output; its error
// carries the tool's own message.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("%w (install util-linux and mount)", err)
	}
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("%s: %s", name, msg)
	}
	return stdout.String(), nil
}
