package commands

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// imageSums is the reference checksum of each disk's image of a shut-off
// domain, as it is on disk.
func imageSums(t *testing.T, bed *testbed.Bed, dom string, formats map[string]string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for disk, format := range formats {
		sums[disk] = imageSum(t, bed.DiskPath(dom, disk), format)
	}
	return sums
}

// offlineWrite writes as a tool that opens the image itself does, while
// the domain is shut off: QEMU's block layer updates the enabled bitmaps.
func offlineWrite(t *testing.T, bed *testbed.Bed, dom, disk, format string, pattern byte, offset, length int64) {
	t.Helper()
	testbed.Run(t, "qemu-io", "-f", format, "-c", fmt.Sprintf("write -P %d %d %d", pattern, offset, length), bed.DiskPath(dom, disk))
}

// holdImage keeps image open for writing in another process, as a tool
// working on it would, until the returned function is called: it then
// closes the image (cleanly: a qemu-io killed would leave the image's
// bitmaps inconsistent) and waits for that. qemu-io reads its commands
// from a pipe, so it holds the image for as long as the test needs,
// however slow the machine.
func holdImage(t *testing.T, image string) func() {
	t.Helper()
	cmd := exec.Command("qemu-io", "-f", "qcow2", image)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	release := func() {
		stdin.Close() // end of its commands: it closes the image and exits
		cmd.Wait()
	}
	// On a loaded machine qemu-io may take seconds to open the image.
	for deadline := time.Now().Add(30 * time.Second); !lockedByAProcess(image); time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatal("qemu-io did not take the image's lock within 30 s")
		}
	}
	return release
}

// imageBitmaps lists the persistent bitmaps of a qcow2 image.
func imageBitmaps(t *testing.T, image string) []string {
	t.Helper()
	var info struct {
		Specific struct {
			Data struct {
				Bitmaps []struct{ Name string } `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "-U", "--output=json", image)), &info); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range info.Specific.Data.Bitmaps {
		names = append(names, b.Name)
	}
	slices.Sort(names)
	return names
}

// One folder, backups made running and shut off in turn: running full,
// off incremental (what the guest wrote before it stopped and what a tool
// wrote while it was off), off incremental, running incremental (the
// offline checkpoint is the one libvirt builds on once the domain runs
// again), off incremental with nothing changed. Each overlay holds
// exactly what changed, and each point restores to the disks as they were.
func TestBackupShutOffMixedChain(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	formats := map[string]string{"vda": "qcow2", "vdb": "raw"}
	dir := filepath.Join(t.TempDir(), "backups")
	points := map[string]map[string]string{}
	backup := func(wantLevel, wantVda string) string {
		t.Helper()
		r := vb(t, open, "backup", dom, "--to", dir)
		wantCode(t, r, ExitOK)
		all := storeBackups(t, dir)
		last := all[len(all)-1]
		if last.Level != wantLevel {
			t.Errorf("backup %d: %s, want %s\n%s", len(all), last.Level, wantLevel, r.stdout)
		}
		if len(all) > 1 {
			if got := topLayerData(t, last.File(last.Disks[0])); got != wantVda {
				t.Errorf("backup %d (%s): vda's overlay holds %q, want %q", len(all), last.Mode, got, wantVda)
			}
		}
		return last.Name()
	}
	stop := func() { bed.Virsh(t, "destroy", dom) }

	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	b1 := backup("full", "")
	points[b1] = sourceSums(t, bed, dom, "vda", "vdb")

	bed.Write(t, dom, "vda", 0x22, 8<<20, 1<<20)
	stop()
	offlineWrite(t, bed, dom, "vda", "qcow2", 0x33, 16<<20, 1<<20)
	offlineWrite(t, bed, dom, "vdb", "raw", 0x34, 0, 1<<20)
	r := vb(t, open, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "would be incremental (changes since backup "+b1+")") {
		t.Errorf("the dry run of the shut-off domain:\n%s", r.stdout)
	}
	b2 := backup("incremental", "8388608+1048576 16777216+1048576")
	points[b2] = imageSums(t, bed, dom, formats)
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, []string{b2}) {
		t.Errorf("libvirt's checkpoints after the offline backup: %v, want %s", got, b2)
	}
	if got := imageBitmaps(t, bed.DiskPath(dom, "vda")); !slices.Equal(got, []string{b2}) {
		t.Errorf("vda's bitmaps after the offline backup: %v, want %s", got, b2)
	}
	if m := storeBackups(t, dir)[1]; m.Mode != "offline" || m.Checkpoint.Parent != b1 {
		t.Errorf("the offline backup's manifest: mode %q, parent %q; want offline, %s", m.Mode, m.Checkpoint.Parent, b1)
	}

	offlineWrite(t, bed, dom, "vda", "qcow2", 0x44, 32<<20, 2<<20)
	b3 := backup("incremental", "33554432+2097152")
	points[b3] = imageSums(t, bed, dom, formats)

	bed.Virsh(t, "start", dom)
	bed.Write(t, dom, "vda", 0x55, 40<<20, 1<<20)
	b4 := backup("incremental", "41943040+1048576")
	points[b4] = sourceSums(t, bed, dom, "vda", "vdb")
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, []string{b4}) {
		t.Errorf("libvirt's checkpoints after the running backup: %v, want %s", got, b4)
	}

	stop()
	b5 := backup("incremental", "")
	points[b5] = imageSums(t, bed, dom, formats)

	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	for _, name := range []string{b1, b2, b3, b4, b5} {
		got := restoredSums(t, open, dir, name, "vda", "vdb")
		for disk, want := range points[name] {
			if got[disk] != want {
				t.Errorf("%s restored at %s: %s, the disk was %s", disk, name, got[disk], want)
			}
		}
	}
}

// A shut-off domain cannot start while its images are read (QEMU's image
// lock, held by vbackup's qemu-nbd until the backup is in place): 'virsh
// start' fails with libvirt's error, and the backup completes.
func TestBackupShutOffStartRefused(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:512M")
	bed.Virsh(t, "destroy", dom)
	offlineWrite(t, bed, dom, "vda", "qcow2", 0x11, 0, 256<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	done := make(chan result, 1)
	go func() { done <- vb(t, open, "backup", dom, "--to", dir) }()
	image := bed.DiskPath(dom, "vda")
	held := false
	for !held {
		select {
		case r := <-done:
			t.Fatalf("the backup ended before its image was seen held:\n%s%s", r.stdout, r.stderr)
		default:
		}
		held = qemuNBDHolds(image)
	}
	out, err := bed.TryVirsh("start", dom)
	if err == nil {
		t.Errorf("virsh start while the backup reads the images worked: %s", out)
	} else if !strings.Contains(err.Error(), `Failed to get "write" lock`) {
		// libvirt may say only that QEMU closed its monitor; QEMU's own
		// log then says why.
		qlog, _ := os.ReadFile(filepath.Join(bed.Dir(), ".cache/libvirt/qemu/log", dom+".log"))
		if !strings.Contains(string(qlog), `Failed to get "write" lock`) {
			t.Errorf("virsh start while the backup reads the images: %v; want QEMU's lock error (QEMU's log:\n%s)", err, qlog)
		}
	}
	r := <-done
	wantCode(t, r, ExitOK)
	bed.Virsh(t, "start", dom)
}

// qemuNBDHolds reports a qemu-nbd process serving image.
func qemuNBDHolds(image string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(data), "qemu-nbd") && strings.Contains(string(data), image) {
			return true
		}
	}
	return false
}

// Bad input on a shut-off domain, each refused with what was wrong and
// nothing changed: an image another process holds open for writing.
// Then a bitmap lost from the image: that disk is backed up full, saying
// why, and the checkpoint made is whole (the next, running, backup is
// incremental from it).
func TestBackupShutOffImageProblems(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()
	bed.Virsh(t, "destroy", dom)

	image := bed.DiskPath(dom, "vdb")
	hold := holdImage(t, image)
	r := vb(t, open, "backup", dom, "--to", dir)
	hold()
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "disk vdb: "+image+" is open for writing by another process")
	if got := backupLevels(t, dir); len(got) != 1 || len(hiddenEntries(t, dir)) != 0 {
		t.Errorf("a refused backup changed the folder: %v %v", got, hiddenEntries(t, dir))
	}
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, []string{first}) {
		t.Errorf("checkpoints after a refused backup: %v", got)
	}

	testbed.Run(t, "qemu-img", "bitmap", "--remove", "-f", "qcow2", bed.DiskPath(dom, "vda"), first)
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "vda    full: its image holds no bitmap of checkpoint "+first) {
		t.Errorf("the backup after a lost bitmap does not say why vda is full:\n%s", r.stdout)
	}
	if got := backupLevels(t, dir)[1]; got != "incremental: vda=full vdb=incremental" {
		t.Errorf("the backup after a lost bitmap: %s", got)
	}
	second := storeBackups(t, dir)[1].Name()
	bed.Virsh(t, "start", dom)
	bed.Write(t, dom, "vda", 0x66, 1<<20, 1<<20)
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if got := backupLevels(t, dir)[2]; got != "incremental: vda=incremental vdb=incremental" {
		t.Errorf("the running backup after the offline one: %s\n%s", got, r.stdout)
	}
	if d := storeBackups(t, dir)[2].Disks[0]; d.Backing != second {
		t.Errorf("vda builds on %s, want %s", d.Backing, second)
	}
	want := sourceSums(t, bed, dom, "vda", "vdb")
	got := restoredSums(t, open, dir, "latest", "vda", "vdb")
	for disk := range want {
		if got[disk] != want[disk] {
			t.Errorf("%s restored: %s, the disk is %s", disk, got[disk], want[disk])
		}
	}
}

// A shut-off backup killed half way (SIGKILL), then the domain started:
// no checkpoint claims what was not saved, the folder holds no trace, and
// the next backup is incremental from the last complete one and correct.
func TestBackupShutOffKilled(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:512M")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()
	bed.Virsh(t, "destroy", dom)
	offlineWrite(t, bed, dom, "vda", "qcow2", 0x22, 64<<20, 384<<20)

	killHalfWay(t, bed, dom, dir, syscall.SIGKILL)
	bed.Virsh(t, "start", dom)
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, []string{first}) {
		t.Errorf("checkpoints after the killed backup: %v, want only %s", got, first)
	}
	bed.Write(t, dom, "vda", 0x33, 8<<20, 1<<20)
	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "removed the unfinished backup")
	if got := backupLevels(t, dir); len(got) != 2 || got[1] != "incremental: vda=incremental" {
		t.Errorf("the backup after the killed one: %v", got)
	}
	want := sourceSums(t, bed, dom, "vda")
	if got := restoredSums(t, open, dir, "latest", "vda"); got["vda"] != want["vda"] {
		t.Errorf("restored %s, the disk is %s", got["vda"], want["vda"])
	}
}

// A transient domain (running, never defined) is backed up as any other:
// full, then incremental.
func TestBackupTransientDomain(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Virsh(t, "undefine", dom)
	// Stopped, a transient domain is gone: the bed then only removes its images.
	t.Cleanup(func() { bed.TryVirsh("destroy", dom) })
	if out := bed.Virsh(t, "dominfo", dom); !strings.Contains(out, "Persistent:     no") {
		t.Fatalf("the domain is still persistent:\n%s", out)
	}
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	bed.Write(t, dom, "vda", 0x77, 2<<20, 1<<20)
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	if got := backupLevels(t, dir); len(got) != 2 || got[1] != "incremental: vda=incremental" {
		t.Errorf("backups of the transient domain: %v", got)
	}
	want := sourceSums(t, bed, dom, "vda")
	if got := restoredSums(t, open, dir, "latest", "vda"); got["vda"] != want["vda"] {
		t.Errorf("restored %s, the disk is %s", got["vda"], want["vda"])
	}
	if m := storeBackups(t, dir)[1]; !strings.Contains(m.Domain.XML, "<name>"+dom+"</name>") {
		t.Errorf("the manifest lacks the domain's definition:\n%s", m.Domain.XML)
	}
}

// lockedByAProcess reports whether some process holds a lock on path
// (QEMU's image locks are OFD locks), read from /proc/locks: asking QEMU
// (qemu-img info) would take a lock itself, and could make the holder's
// own open fail.
func lockedByAProcess(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return false
	}
	return strings.Contains(string(locks), fmt.Sprintf(":%d ", st.Ino))
}
