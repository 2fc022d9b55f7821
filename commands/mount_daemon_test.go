package commands

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/engine"
	"vbackup/qsd"
)

// folderState is every file of a backup folder with its size and
// modification time: what a read-only feature must leave as it was.
func folderState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		out[p] = fmt.Sprintf("%v %v %d", fi.Mode(), fi.ModTime(), fi.Size())
		return nil
	})
	return out
}

func sameFolder(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := folderState(t, dir)
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed: %q, was %q", p, after[p], s)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared in the backup folder", p)
		}
	}
}

// mountRecord returns vbackup's record of the mount at mp, or fails t.
func mountRecord(t *testing.T, mp string) engine.Mounted {
	t.Helper()
	all, err := engine.Mounts("")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Mountpoint == mp {
			return m
		}
	}
	t.Fatalf("no mount record for %s among %+v", mp, all)
	return engine.Mounted{}
}

// wantUnmounted fails t if anything of the mount m is left: the
// filesystem, the daemon, the record.
func wantUnmounted(t *testing.T, m engine.Mounted) {
	t.Helper()
	if mounted, _ := mountinfoHas(m.Mountpoint); mounted {
		t.Errorf("%s is still mounted", m.Mountpoint)
	}
	if qsd.Running(m.PID) {
		t.Errorf("qemu-storage-daemon %d still runs", m.PID)
	}
	all, _ := engine.Mounts("")
	for _, o := range all {
		if o.Mountpoint == m.Mountpoint {
			t.Errorf("the record of %s is still there", m.Mountpoint)
		}
	}
}

func mountinfoHas(p string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	return strings.Contains(string(data), " "+p+" "), err
}

// The mount on an ext4 whole disk, end to end: the files at the
// backup point are there read-only, mount lists it, prune waits for it,
// umount leaves nothing running, and the backup folder is as it was
// (verify passes, no file changed or added).
func TestMountExt4WholeDisk(t *testing.T) {
	open, bed := realDaemon(t)
	src := sourceTree(t, "ext4")
	dom := imageDomain(t, bed, ext4Image(t, src, "rootfs", 64<<20), "64M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)

	mp := t.TempDir()
	start := time.Now()
	r := vb(t, open, "mount", "--from", dir, mp)
	wantCode(t, r, ExitOK)
	t.Logf("mount took %v", time.Since(start))
	if !strings.Contains(r.stdout, `the whole disk (ext4 "rootfs", 64.000 MiB) read-only on `+mp) {
		t.Errorf("mount said:\n%s", r.stdout)
	}
	if strings.Contains(r.stderr, "not cleanly frozen") {
		t.Errorf("a clean filesystem is said to be unclean:\n%s", r.stderr)
	}
	m := mountRecord(t, mp)
	t.Cleanup(func() { vb(t, open, "umount", mp) })
	sameTree(t, src, mp)
	if err := os.WriteFile(filepath.Join(mp, "new.txt"), []byte("x"), 0o644); err == nil {
		t.Errorf("the mount is writable")
	}
	if !qsd.Running(m.PID) {
		t.Errorf("no qemu-storage-daemon behind the mount (pid %d)", m.PID)
	}
	list := vb(t, open, "mount")
	wantCode(t, list, ExitOK)
	if !strings.Contains(list.stdout, mp) || !strings.Contains(list.stdout, dir) {
		t.Errorf("mount without arguments does not list %s:\n%s", mp, list.stdout)
	}
	again := vb(t, open, "mount", "--from", dir, mp)
	wantCode(t, again, ExitFailure)
	wantStderr(t, again, "already a vbackup mount")

	pr := vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, pr, ExitFailure)
	wantStderr(t, pr, "is reading the backups", "vbackup umount")

	wantCode(t, vb(t, open, "umount", mp), ExitOK)
	wantUnmounted(t, m)
	if entries, _ := os.ReadDir(mp); len(entries) != 0 {
		t.Errorf("the mount point is not empty after umount: %v", entries)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}

// ls and cat read one file without leaving a mount behind.
func TestLsCat(t *testing.T) {
	open, bed := realDaemon(t)
	src := sourceTree(t, "lscat")
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "escape")); err != nil {
		t.Fatal(err)
	}
	dom := imageDomain(t, bed, ext4Image(t, src, "files", 64<<20), "64M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)
	mountsBefore, _ := engine.Mounts("")

	ls := vb(t, open, "ls", "--from", dir, "/etc/conf")
	wantCode(t, ls, ExitOK)
	lines := strings.Split(strings.TrimSpace(ls.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "-rw-r--r-- ") || !strings.HasSuffix(lines[0], " app.conf") ||
		!strings.HasSuffix(lines[1], " empty.txt") || !strings.Contains(lines[0], " 16 ") {
		t.Errorf("ls /etc/conf:\n%s", ls.stdout)
	}
	root := vb(t, open, "ls", "--from", dir, "--json")
	wantCode(t, root, ExitOK)
	names := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(root.stdout), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("ls --json line %q: %v", line, err)
		}
		names[e["name"].(string)] = e
	}
	if e := names["big.bin"]; e == nil || e["size"].(float64) != 1<<20 || e["mode"] != "-rw-r--r--" {
		t.Errorf("ls --json / has no 1 MiB big.bin: %v", names)
	}
	if e := names["escape"]; e == nil || e["target"] != "/etc/passwd" {
		t.Errorf("ls --json / does not show the symbolic link: %v", names["escape"])
	}

	cat := vb(t, open, "cat", "--from", dir, "/big.bin")
	wantCode(t, cat, ExitOK)
	want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	if cat.stdout != string(want) {
		t.Errorf("cat /big.bin gave %d bytes, not the source's %d", len(cat.stdout), len(want))
	}
	missing := vb(t, open, "cat", "--from", dir, "/etc/nope")
	wantCode(t, missing, ExitFailure)
	wantStderr(t, missing, "/etc/nope: no such file or folder in the backup")
	folder := vb(t, open, "cat", "--from", dir, "/etc")
	wantCode(t, folder, ExitFailure)
	wantStderr(t, folder, "is a folder")
	// An absolute link is the guest's, never the host's /etc/passwd.
	escape := vb(t, open, "cat", "--from", dir, "/escape")
	wantCode(t, escape, ExitFailure)
	wantStderr(t, escape, "leads out of the backed-up filesystem")
	if strings.Contains(escape.stdout, "root:") {
		t.Errorf("cat of an absolute link read the host's file")
	}

	if after, _ := engine.Mounts(""); len(after) != len(mountsBefore) {
		t.Errorf("ls and cat left mounts behind: %+v", after)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}
