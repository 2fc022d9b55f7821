package commands

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// A domain re-created from its XML has lost its checkpoints; the next backup
// redefines them from the folder and stays incremental. A disk attached
// since the last backup gets a full image while the others stay incremental.
func TestBackupAfterRecreateAndNewDisk(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)

	// A new disk in the definition, and the domain re-created from it (the
	// bed's machine has no PCI hotplug).
	img := filepath.Join(filepath.Dir(bed.DiskPath(dom, "vda")), "vdc.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "32M")
	testbed.Run(t, "chown", "--reference", bed.DiskPath(dom, "vda"), img)
	bed.Virsh(t, "attach-disk", dom, img, "vdc", "--subdriver", "qcow2", "--config")
	recreate(t, bed, dom)
	bed.Write(t, dom, "vda", 0xaa, 8<<20, 1<<20)
	bed.Write(t, dom, "vdc", 0xcc, 0, 2<<20)

	r := vb(t, open, "backup", dom, "--to", dir, "--level", "inc")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "was not in libvirt: redefined from "+dir)
	if !strings.Contains(r.stdout, "vdc    full: new since the last backup") {
		t.Errorf("the output does not say why vdc is full:\n%s", r.stdout)
	}
	if got, want := backupLevels(t, dir)[1], "incremental: vda=incremental vdc=full"; got != want {
		t.Errorf("levels = %s, want %s", got, want)
	}
	backups := storeBackups(t, dir)
	if got := topLayerData(t, backups[1].File(backups[1].Disks[0])); got != "8388608+1048576" {
		t.Errorf("the incremental after re-creation holds %s, want only the change 8388608+1048576", got)
	}
	bed.Write(t, dom, "vda", 0xbb, 16<<20, 1<<20)
	bed.Write(t, dom, "vdc", 0xdd, 4<<20, 1<<20)
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	if got, want := backupLevels(t, dir)[2], "incremental: vda=incremental vdc=incremental"; got != want {
		t.Errorf("levels = %s, want %s", got, want)
	}

	// Only the newest backup's checkpoint is kept; re-created again, the
	// domain cannot have the older ones back (their bitmaps are gone), but
	// the last one comes back, as a root.
	if out := strings.Fields(bed.Virsh(t, "checkpoint-list", dom, "--name")); len(out) != 1 || out[0] != storeBackups(t, dir)[2].Name() {
		t.Errorf("checkpoints after three backups: %v, want the newest alone", out)
	}
	recreate(t, bed, dom)
	bed.Write(t, dom, "vda", 0xee, 24<<20, 1<<20)
	r = vb(t, open, "backup", dom, "--to", dir, "--level", "inc")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "note: checkpoint "+storeBackups(t, dir)[2].Name()+" was not in libvirt: redefined")
	if got := topLayerData(t, storeBackups(t, dir)[3].File(backups[1].Disks[0])); got != "25165824+1048576" {
		t.Errorf("the incremental after the second re-creation holds %s, want only 25165824+1048576", got)
	}
	want := sourceSums(t, bed, dom, "vda", "vdc")
	out := filepath.Join(t.TempDir(), "restore")
	wantCode(t, vb(t, open, "restore", "--from", dir, "--to", out), ExitOK)
	for disk, sum := range want {
		if got := imageSum(t, filepath.Join(out, disk+".qcow2"), "qcow2"); got != sum {
			t.Errorf("restored %s is %s, the disk is %s", disk, got, sum)
		}
	}
	r = vb(t, open, "verify", "--from", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "All 7 disk images of 4 backups match")

	r = vb(t, open, "backup", dom, "--to", dir, "--disk", "vda")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "vdc    not backed up this time (not named by --disk)") {
		t.Errorf("a backup of vda alone says of vdc:\n%s", r.stdout)
	}
}

// recreate undefines the domain with its checkpoint metadata and defines
// and starts it again from its XML, as after a move to another host.
func recreate(t *testing.T, bed *testbed.Bed, dom string) {
	t.Helper()
	xml := filepath.Join(t.TempDir(), "domain.xml")
	if err := os.WriteFile(xml, []byte(bed.Virsh(t, "dumpxml", "--inactive", dom)), 0o644); err != nil {
		t.Fatal(err)
	}
	// --graceful: QEMU stops on SIGTERM and writes its persistent bitmaps.
	bed.Virsh(t, "destroy", "--graceful", dom)
	bed.Virsh(t, "undefine", "--checkpoints-metadata", dom)
	bed.Virsh(t, "define", xml)
	bed.Virsh(t, "start", dom)
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "" {
		t.Fatalf("the re-created domain has checkpoints %q", out)
	}
}

// --push: libvirt writes the images; the incremental ones are put in the
// chain afterwards.
func TestBackupPush(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	dir := filepath.Join(bed.Folder(t), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir, "--push"), ExitOK)
	bed.Write(t, dom, "vda", 0xaa, 32<<20, 1<<20)
	r := vb(t, open, "backup", dom, "--to", dir, "--push")
	wantCode(t, r, ExitOK)
	backups := storeBackups(t, dir)
	if len(backups) != 2 || backups[1].Mode != "push" || backups[1].Disks[0].Level != "incremental" {
		t.Fatalf("backups: %v", backupLevels(t, dir))
	}
	if d := backups[1].Disks[0]; d.Copied != 1<<20 {
		t.Errorf("the incremental push copied %d bytes, want %d", d.Copied, 1<<20)
	}
	if info := testbed.Run(t, "qemu-img", "info", backups[1].File(backups[1].Disks[0])); !strings.Contains(info, "backing file: ../"+backups[0].Name()+"/vda.qcow2") {
		t.Errorf("the overlay's backing file:\n%s", info)
	}
	want := sourceSums(t, bed, dom, "vda")
	if backups[1].Disks[0].Checksum != want["vda"] {
		t.Errorf("manifest %s, disk %s", backups[1].Disks[0].Checksum, want["vda"])
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
}

// restore --define makes a new domain on the restored images, beside the
// original.
func TestRestoreDefine(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	out := filepath.Join(t.TempDir(), "restore")
	name := dom + "-r"
	t.Cleanup(func() { _, _ = bed.TryVirsh("undefine", name) })
	r := vb(t, open, "restore", "--from", dir, "--to", out, "--define", name)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "Domain "+name+" defined on the restored images (not started)")
	blk := bed.Virsh(t, "domblklist", name)
	for _, want := range []string{filepath.Join(out, "vda.qcow2"), filepath.Join(out, "vdb.qcow2")} {
		if !strings.Contains(blk, want) {
			t.Errorf("domblklist %s lacks %s:\n%s", name, want, blk)
		}
	}
	if a, b := bed.Virsh(t, "domuuid", name), bed.Virsh(t, "domuuid", dom); a == b {
		t.Errorf("the restored domain has the original's UUID %s", a)
	}
	// Defining it again is refused before anything is written.
	out2 := filepath.Join(t.TempDir(), "restore2")
	r = vb(t, open, "restore", "--from", dir, "--to", out2, "--define", name)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "a domain of that name exists already")
	if _, err := os.Stat(out2); !os.IsNotExist(err) {
		t.Errorf("a refused restore made %s", out2)
	}
}

// Bad input: a clear error, a non-zero exit, nothing changed.
func TestBackupBadInputs(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	other := bed.Domain(t, "vda:qcow2:64M")
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "backups")
	fresh := filepath.Join(tmp, "fresh")

	r := vb(t, open, "backup", dom, "--to", fresh, "--level", "inc")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "the first backup is full; use --level auto or full")
	r = vb(t, open, "backup", dom, "--to", fresh, "--disk", "vdz")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `has no disk "vdz"; its disks are vda`)
	wantCode(t, vb(t, open, "backup", dom, "--to", fresh, "--level", "weekly"), ExitUsage)
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("refused backups made %s", fresh)
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != "" {
		t.Errorf("refused backups left checkpoints %q", out)
	}

	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	before := backupLevels(t, dir)
	r = vb(t, open, "backup", other, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "holds the backups of domain "+dom, "give each domain its own folder")

	unlock := lockFolder(t, dir)
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "another vbackup command is writing "+dir)
	unlock()
	if after := backupLevels(t, dir); strings.Join(after, "|") != strings.Join(before, "|") {
		t.Errorf("refused backups changed the folder: %v, was %v", after, before)
	}

	out := filepath.Join(tmp, "restore")
	r = vb(t, open, "restore", "--from", dir, "--to", out, "--at", "nosuch")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `has no backup "nosuch"; it holds vbackup-`)
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, "vda.qcow2"), []byte("mine"), 0o644)
	r = vb(t, open, "restore", "--from", dir, "--to", out)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "vda.qcow2 exists already")
	if data, _ := os.ReadFile(filepath.Join(out, "vda.qcow2")); string(data) != "mine" {
		t.Errorf("restore wrote over a file")
	}
	wantCode(t, vb(t, open, "restore", "--from", dir, "--to", out, "--format", "vmdk"), ExitUsage)
	wantCode(t, vb(t, open, "restore", "--from", dir, "--to", out, "extra"), ExitUsage)

	r = vb(t, open, "verify", "--from", fresh)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "is not a folder of backups")
	r = vb(t, open, "backups", fresh)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "is not a folder of backups")
}

// lockFolder holds DIR's lock from another process, as a second vbackup
// would.
func lockFolder(t *testing.T, dir string) func() {
	t.Helper()
	cmd := exec.Command("flock", "-x", filepath.Join(dir, ".vbackup.lock"), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// flock has the lock once the file is held by it.
	for i := 0; i < 100; i++ {
		if out, _ := exec.Command("flock", "-n", "-x", filepath.Join(dir, ".vbackup.lock"), "true").CombinedOutput(); len(out) == 0 {
			if exec.Command("flock", "-n", "-x", filepath.Join(dir, ".vbackup.lock"), "true").Run() != nil {
				break
			}
		}
		exec.Command("sleep", "0.05").Run()
	}
	return func() { cmd.Process.Kill(); cmd.Wait() }
}

// removeBitmap deletes a checkpoint's bitmap behind libvirt's back, as a
// crash can lose it: libvirt still lists the checkpoint, but it is broken.
func removeBitmap(t *testing.T, bed *testbed.Bed, dom, bitmap string) {
	t.Helper()
	out := bed.Virsh(t, "qemu-monitor-command", dom, `{"execute":"query-named-block-nodes","arguments":{"flat":true}}`)
	var reply struct {
		Return []struct {
			Node    string `json:"node-name"`
			Bitmaps []struct {
				Name string `json:"name"`
			} `json:"dirty-bitmaps"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("query-named-block-nodes: %v\n%s", err, out)
	}
	for _, n := range reply.Return {
		for _, b := range n.Bitmaps {
			if b.Name == bitmap {
				bed.Virsh(t, "qemu-monitor-command", dom,
					`{"execute":"block-dirty-bitmap-remove","arguments":{"node":"`+n.Node+`","name":"`+bitmap+`"}}`)
				return
			}
		}
	}
	t.Fatalf("no bitmap %s in domain %s:\n%s", bitmap, dom, out)
}

// A checkpoint whose bitmap was lost cannot be built on: --level inc
// refuses and changes nothing; auto makes a full backup and says why.
func TestBackupBrokenCheckpoint(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()
	removeBitmap(t, bed, dom, first)
	bed.Write(t, dom, "vda", 0xaa, 8<<20, 1<<20)

	r := vb(t, open, "backup", dom, "--to", dir, "--level", "inc")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "is as it was")
	if !strings.Contains(strings.ToLower(r.stderr), "inconsistent") {
		t.Errorf("the refusal does not say the checkpoint is broken:\n%s", r.stderr)
	}
	if got := backupLevels(t, dir); len(got) != 1 {
		t.Errorf("a refused backup changed the folder: %v", got)
	}
	if out := strings.TrimSpace(bed.Virsh(t, "checkpoint-list", dom, "--name")); out != first {
		t.Errorf("checkpoints after a refused backup: %q", out)
	}

	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "The checkpoint of backup "+first+" is broken in libvirt") {
		t.Errorf("auto does not say why it made a full backup:\n%s", r.stdout)
	}
	wantStderr(t, r, "the broken checkpoint "+first+" is deleted from libvirt")
	if out := strings.Fields(bed.Virsh(t, "checkpoint-list", dom, "--name")); len(out) != 1 || out[0] == first {
		t.Errorf("checkpoints after the full backup: %v, want only the new one", out)
	}
	if got := backupLevels(t, dir)[1]; got != "full: vda=full" {
		t.Errorf("the backup after a broken checkpoint: %s, want full", got)
	}
	want := sourceSums(t, bed, dom, "vda")
	if got := storeBackups(t, dir)[1].Disks[0].Checksum; got != want["vda"] {
		t.Errorf("manifest %s, disk %s", got, want["vda"])
	}
}
