package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vbackup/qsd"
)

// A mount's record is RECORDS/m-XXXX/mount.json (Mounted), beside the
// overlay, the exported disk file and the daemon's pid file and log. It
// is what Unmount undoes, and all it undoes: a mount point without a
// record is not vbackup's.

func (m *Mounted) save() error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(m.record, recordFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(m.record, recordFile))
}

// Mounts lists the mounts vbackup made, as recorded in records.
func Mounts(records string) ([]Mounted, error) {
	if records == "" {
		records = DefaultMountRecords
	}
	entries, err := os.ReadDir(records)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Mounted
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "m-") {
			continue
		}
		dir := filepath.Join(records, e.Name())
		data, err := os.ReadFile(filepath.Join(dir, recordFile))
		if errors.Is(err, os.ErrNotExist) {
			continue // made a moment ago, or its record not written yet
		}
		if err != nil {
			return nil, err
		}
		var m Mounted
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
		}
		m.record = dir
		out = append(out, m)
	}
	return out, nil
}

func findMount(records, mountpoint string) (*Mounted, error) {
	all, err := Mounts(records)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Mountpoint == mountpoint {
			return &all[i], nil
		}
	}
	return nil, nil
}

// Unmount undoes the mount vbackup made at mountpoint: the filesystem,
// its loop device, the daemon (which releases the folder's lock) and the
// record with its overlay. A mount point vbackup did not mount is an
// error that changes nothing.
func Unmount(ctx context.Context, records, mountpoint string) (Mounted, error) {
	if records == "" {
		records = DefaultMountRecords
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return Mounted{}, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	m, err := findMount(records, abs)
	if err != nil {
		return Mounted{}, err
	}
	if m == nil {
		all, _ := Mounts(records)
		var mps []string
		for _, o := range all {
			mps = append(mps, o.Mountpoint)
		}
		what := "vbackup has no mounts now"
		if len(mps) > 0 {
			what = "vbackup's mounts are " + strings.Join(mps, ", ")
		}
		return Mounted{}, fmt.Errorf("%s is not a mount vbackup made (no record of it in %s); %s", abs, records, what)
	}
	if os.Geteuid() != 0 {
		return *m, errors.New("unmounting a backup needs root")
	}
	return *m, m.undo()
}

// undo takes down what the record says was set up, in reverse order,
// and removes the record last, so that a failure can be retried.
func (m *Mounted) undo() error {
	ctx := context.Background() // undoing is not given up half-way
	if mounted, err := isMountpoint(m.Mountpoint); err != nil {
		return err
	} else if mounted && m.Loop != "" && mountedFrom(m.Mountpoint, m.Loop, m.Driver) {
		if _, err := runTool(ctx, "umount", m.Mountpoint); err != nil {
			return fmt.Errorf("%w (is a shell or a program using a file under %s?)", err, m.Mountpoint)
		}
	}
	m.Mounted = false
	if m.Loop != "" && loopBackedBy(m.Loop, filepath.Join(m.record, diskFile)) {
		if _, err := runTool(ctx, "losetup", "--detach", m.Loop); err != nil {
			return err
		}
	}
	m.Loop = ""
	if m.PID != 0 {
		if err := qsd.Stop(m.PID); err != nil {
			return err
		}
	}
	// A daemon whose number never reached the record (its start cut
	// short, or vbackup killed before the record was saved) still holds
	// the folder's lock: its pid file, or its command line, finds it,
	// and the record (with that file) goes only once it is stopped.
	if err := qsd.StopPIDFile(filepath.Join(m.record, pidFile)); err != nil {
		return err
	}
	// A daemon killed outright leaves its FUSE mount behind.
	file := filepath.Join(m.record, diskFile)
	if mounted, _ := isMountpoint(file); mounted {
		if _, err := runTool(ctx, "umount", "--lazy", file); err != nil {
			return err
		}
	}
	if m.Private {
		os.Remove(m.Mountpoint) // empty now; a folder someone filled stays
	}
	return os.RemoveAll(m.record)
}

// mountedFrom reports whether the mount at path is of device dev, so
// that a record never unmounts what someone else mounted there since.
func mountedFrom(path, dev, driver string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || unescapeMount(f[4]) != path {
			continue
		}
		for i, x := range f {
			// A FUSE driver names itself as the source, not the device.
			if x == "-" && i+2 < len(f) && (f[i+2] == dev || driver != "" && f[i+1] == "fuse."+driver) {
				return true
			}
		}
	}
	return false
}

// loopBackedBy reports whether loop device dev reads file.
func loopBackedBy(dev, file string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	return err == nil && strings.TrimSpace(string(b)) == file
}
