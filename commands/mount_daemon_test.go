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

// Partitions: MBR and GPT disks with several filesystems (ext4, xfs,
// vfat). Without --partition the error lists them; each is mounted by
// number; a number out of range is refused; a disk with one filesystem
// among other partitions mounts it without --partition.
func TestMountPartitions(t *testing.T) {
	open, bed := realDaemon(t)
	srcExt, srcXFS, srcFAT := sourceTree(t, "ext4part"), sourceTree(t, "xfspart"), sourceTree(t, "fatpart")
	mbr := partitionedImage(t, "mbr", 512<<20, vfatImage(t, srcFAT, "EFIBOOT", 32<<20), xfsImage(t, srcXFS, "data", 320<<20), ext4Image(t, srcExt, "home", 64<<20))
	dom := imageDomain(t, bed, mbr, "512M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)

	mp := t.TempDir()
	several := vb(t, open, "mount", "--from", dir, mp)
	wantCode(t, several, ExitFailure)
	wantStderr(t, several, "holds 3 filesystems; pick one with --partition N", "PARTITION", "TYPE", "SIZE", "LABEL")
	for _, row := range [][]string{{"1", "vfat", "32.000 MiB", "EFIBOOT"}, {"2", "xfs", "320.000 MiB", "data"}, {"3", "ext4", "64.000 MiB", "home"}} {
		if !strings.Contains(strings.Join(strings.Fields(several.stderr), " "), strings.Join(row, " ")) {
			t.Errorf("the error does not list partition %v:\n%s", row, several.stderr)
		}
	}
	out := vb(t, open, "mount", "--from", dir, "--partition", "7", mp)
	wantCode(t, out, ExitFailure)
	wantStderr(t, out, "has no partition 7; its MBR partitions are 1, 2, 3")
	if all, _ := engine.Mounts(""); len(all) != 0 {
		for _, m := range all {
			if strings.HasPrefix(m.Folder, dir) {
				t.Errorf("a refused mount left a record: %+v", m)
			}
		}
	}

	for _, c := range []struct {
		part, fs string
		src      string
	}{{"1", "vfat", srcFAT}, {"2", "xfs", srcXFS}, {"3", "ext4", srcExt}} {
		r := vb(t, open, "mount", "--from", dir, "--partition", c.part, mp)
		wantCode(t, r, ExitOK)
		if !strings.Contains(r.stdout, "partition "+c.part+" ("+c.fs) {
			t.Errorf("mount --partition %s said:\n%s", c.part, r.stdout)
		}
		if strings.Contains(r.stderr, "not cleanly frozen") {
			t.Errorf("the clean %s is said to be unclean:\n%s", c.fs, r.stderr)
		}
		m := mountRecord(t, mp)
		if m.Driver == "fusefat" {
			sameTreeAs(t, c.src, mp, upperShortNames)
		} else {
			sameTree(t, c.src, mp)
		}
		wantCode(t, vb(t, open, "umount", mp), ExitOK)
		wantUnmounted(t, m)
	}
	cat := vb(t, open, "cat", "--from", dir, "--partition", "2", "/etc/conf/app.conf")
	wantCode(t, cat, ExitOK)
	if cat.stdout != "setting = xfspart\n" {
		t.Errorf("cat from the xfs partition: %q", cat.stdout)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}

// A GPT disk with one filesystem and a partition holding none: mount
// needs no --partition; a partition without a filesystem is refused with
// what was found.
func TestMountGPT(t *testing.T) {
	open, bed := realDaemon(t)
	src := sourceTree(t, "gpt")
	gpt := partitionedImage(t, "gpt", 128<<20, blankImage(t, 8<<20), ext4Image(t, src, "root", 64<<20))
	dom := imageDomain(t, bed, gpt, "128M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)

	mp := t.TempDir()
	r := vb(t, open, "mount", "--from", dir, mp)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, `partition 2 (ext4 "root", 64.000 MiB)`) {
		t.Errorf("mount said:\n%s", r.stdout)
	}
	m := mountRecord(t, mp)
	sameTree(t, src, mp)
	wantCode(t, vb(t, open, "umount", mp), ExitOK)
	wantUnmounted(t, m)

	none := vb(t, open, "ls", "--from", dir, "--partition", "1", "/")
	wantCode(t, none, ExitFailure)
	wantStderr(t, none, "vbackup cannot mount partition 1 (no filesystem known, 8.000 MiB)")
}

// Bad input, each an error that changes nothing.
func TestMountBadInput(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:qcow2:16M")
	bed.Write(t, dom, "vda", 0xcd, 0, 1<<20) // not a filesystem
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)

	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"mount", "--from", dir, "--disk", "vda", full}, []string{"mount point " + full + " is not empty (it holds keep.txt)"}},
		{[]string{"mount", "--from", dir, "--disk", "vda", file}, []string{"is not a folder"}},
		{[]string{"mount", "--from", dir, "--disk", "vda", filepath.Join(empty, "missing")}, []string{"does not exist"}},
		{[]string{"mount", "--from", dir, empty}, []string{"has disks vda, vdb: pick one with --disk"}},
		{[]string{"mount", "--from", dir, "--disk", "vdz", empty}, []string{`has no disk "vdz"; its disks are vda, vdb`}},
		{[]string{"mount", "--from", dir, "--disk", "vda", empty}, []string{"disk vda holds no filesystem vbackup can mount (ext2/3/4, xfs, vfat)", "neither a filesystem nor a partition table"}},
		{[]string{"mount", "--from", dir, "--disk", "vdb", "--partition", "1", empty}, []string{"has no partition table", "leave out --partition"}},
		{[]string{"umount", empty}, []string{empty + " is not a mount vbackup made"}},
		{[]string{"umount", full}, []string{"is not a mount vbackup made"}},
	} {
		r := vb(t, open, c.args...)
		wantCode(t, r, ExitFailure)
		wantStderr(t, r, c.want...)
	}
	wantCode(t, vb(t, open, "mount", "--from", dir, "--partition", "0", empty), ExitUsage)
	if data, _ := os.ReadFile(filepath.Join(full, "keep.txt")); string(data) != "mine" {
		t.Errorf("the non-empty folder was changed")
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("a refused mount left %v in the mount point", entries)
	}
	sameFolder(t, dir, before)
}

// Every point of a compressed chain mounts as it was; the last point is
// of a guest's ext4 caught mid-write (its journal needs replaying): its
// files show, mount says it was not cleanly frozen, and the journal is
// replayed into the throwaway overlay, not into the backup.
func TestMountCompressedChainDirty(t *testing.T) {
	open, bed := realDaemon(t)
	srcA, srcB := sourceTree(t, "pointA"), sourceTree(t, "pointB")
	dom := imageDomain(t, bed, ext4Image(t, srcA, "chain", 64<<20), "64M")
	dir := filepath.Join(t.TempDir(), "backups")
	day := time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC)
	wantCode(t, vbAt(t, open, day, "backup", dom, "--to", dir, "--compress", "zstd"), ExitOK)
	dirty := dirtyExt4Image(t, srcB, 64<<20)
	liveWrite(t, bed, dom, dirty)
	wantCode(t, vbAt(t, open, day.Add(time.Hour), "backup", dom, "--to", dir, "--compress", "zstd"), ExitOK)
	var list []struct {
		Backup string `json:"backup"`
		Level  string `json:"level"`
	}
	backups := vb(t, open, "backups", dir, "--json")
	for _, line := range strings.Split(strings.TrimSpace(backups.stdout), "\n") {
		var b struct {
			Backup string `json:"backup"`
			Level  string `json:"level"`
		}
		json.Unmarshal([]byte(line), &b)
		list = append(list, b)
	}
	if len(list) != 2 || list[1].Level != "incremental" {
		t.Fatalf("want a full and an incremental backup: %+v", list)
	}
	before := folderState(t, dir)

	mp := t.TempDir()
	first := vb(t, open, "mount", "--from", dir, "--at", list[0].Backup, mp)
	wantCode(t, first, ExitOK)
	if strings.Contains(first.stderr, "not cleanly frozen") {
		t.Errorf("the clean first point is said to be unclean:\n%s", first.stderr)
	}
	sameTree(t, srcA, mp)
	wantCode(t, vb(t, open, "umount", mp), ExitOK)

	last := vb(t, open, "mount", "--from", dir, "--at", list[1].Backup, mp)
	wantCode(t, last, ExitOK)
	wantStderr(t, last, "not cleanly frozen", "journal was replayed into a throwaway overlay")
	m := mountRecord(t, mp)
	if !m.Dirty {
		t.Errorf("the record does not say the filesystem was unclean: %+v", m)
	}
	sameTree(t, srcB, mp)
	wantCode(t, vb(t, open, "umount", mp), ExitOK)
	wantUnmounted(t, m)

	cat := vb(t, open, "cat", "--from", dir, "/etc/conf/app.conf")
	wantCode(t, cat, ExitOK)
	if cat.stdout != "setting = pointB\n" {
		t.Errorf("cat at the latest point: %q", cat.stdout)
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}

// An xfs whose log needs replaying: refused on a read-only device, so
// mount replays it into the overlay and says so.
func TestMountDirtyXFS(t *testing.T) {
	open, bed := realDaemon(t)
	src := sourceTree(t, "dirtyxfs")
	live := xfsImage(t, t.TempDir(), "dirtyx", 320<<20)
	mnt := t.TempDir()
	tool(t, "mount", "-o", "loop", live, mnt)
	tool(t, "cp", "-a", src+"/.", mnt)
	tool(t, "sync", "-f", mnt)
	dirty := filepath.Join(t.TempDir(), "dirty.img")
	tool(t, "cp", "--sparse=always", live, dirty)
	tool(t, "umount", mnt)
	dom := imageDomain(t, bed, dirty, "320M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := folderState(t, dir)

	mp := t.TempDir()
	r := vb(t, open, "mount", "--from", dir, mp)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "not cleanly frozen")
	m := mountRecord(t, mp)
	sameTree(t, src, mp)
	wantCode(t, vb(t, open, "umount", mp), ExitOK)
	wantUnmounted(t, m)
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	sameFolder(t, dir, before)
}
