package testbed

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The guest boots, mounts its disk read-write, runs scripts through its
// agent, and its filesystem can be frozen and thawed through libvirt.
func TestGuest(t *testing.T) {
	bed := Get(t)
	dom := bed.Guest(t)
	if again := bed.Guest(t); again != dom {
		t.Errorf("Guest booted a second guest %s; want the shared %s", again, dom)
	}
	if out := bed.GuestRun(t, dom, "cat "+GuestDataDir+"/README"); !strings.Contains(out, "vbackup test guest") {
		t.Errorf("the guest's %s/README says %q", GuestDataDir, out)
	}
	mounts := bed.GuestRun(t, dom, "cat /proc/mounts")
	if !strings.Contains(mounts, "/dev/vda "+GuestDataDir+" ext4 rw") {
		t.Errorf("vda is not mounted read-write on %s:\n%s", GuestDataDir, mounts)
	}
	bed.GuestRun(t, dom, "echo written > "+GuestDataDir+"/probe && sync")
	if out := bed.Virsh(t, "domfsinfo", dom); !strings.Contains(out, GuestDataDir) {
		t.Errorf("virsh domfsinfo does not list %s:\n%s", GuestDataDir, out)
	}
	if out := bed.Virsh(t, "domfsfreeze", dom); !strings.Contains(out, "Froze 1 filesystem") {
		t.Errorf("virsh domfsfreeze: %q", out)
	}
	if st := string(bed.AgentCommand(t, dom, `{"execute":"guest-fsfreeze-status"}`)); st != `"frozen"` {
		t.Errorf("fsfreeze status after domfsfreeze: %s", st)
	}
	if out := bed.Virsh(t, "domfsthaw", dom); !strings.Contains(out, "Thawed 1 filesystem") {
		t.Errorf("virsh domfsthaw: %q", out)
	}
	bed.GuestRun(t, dom, "rm "+GuestDataDir+"/probe")
	if p := bed.DiskPath(dom, "vda"); filepath.Base(p) != "vda.qcow2" {
		t.Errorf("DiskPath(%s, vda) = %q", dom, p)
	}
}

// The build is cached: a second build of the same inputs changes nothing.
func TestGuestBuildCached(t *testing.T) {
	Need(t, "cpio", "mke2fs", "qemu-img")
	if _, err := buildGuest(); err != nil {
		unavailable(t, err)
	}
	dir := guestBuildDir
	before, err := os.Stat(filepath.Join(dir, "initrd.img"))
	if err != nil {
		t.Fatal(err)
	}
	root, _ := ModuleRoot()
	out, err := exec.Command("bash", filepath.Join(root, "scripts", "guest.sh"), "build", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("guest.sh build: %v\n%s", err, out)
	}
	after, err := os.Stat(filepath.Join(dir, "initrd.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) || strings.Contains(string(out), "building") {
		t.Errorf("a second build rebuilt the guest:\n%s", out)
	}
}
