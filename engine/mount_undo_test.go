package engine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/chain"
	"vbackup/internal/testbed"
	"vbackup/qsd"
)

// A mount whose daemon started but whose record never got its number
// (the start cut short, or vbackup killed before saving it): umount
// still stops the daemon, which holds the folder's read lock, before it
// removes the record with the pid file; a prune can then rewrite.
func TestMountUndoStopsUnrecordedDaemon(t *testing.T) {
	testbed.NeedRoot(t, "unmounting")
	folder, records, mp := t.TempDir(), t.TempDir(), t.TempDir()
	top := filepath.Join(t.TempDir(), "top.qcow2")
	if err := writeQcow2(top); err != nil {
		t.Fatal(err)
	}
	m := Mounted{Mountpoint: mp, Folder: folder, Backup: "b", Disk: "vda"}
	var err error
	if m.record, err = os.MkdirTemp(records, "m-"); err != nil {
		t.Fatal(err)
	}
	if err := m.save(); err != nil { // PID 0: as saved before the daemon starts
		t.Fatal(err)
	}
	overlay := filepath.Join(m.record, overlayFile)
	if err := qsd.CreateOverlay(context.Background(), overlay, 1<<20); err != nil {
		t.Fatal(err)
	}
	lock, err := chain.LockReadingFile(folder)
	if err != nil {
		t.Fatal(err)
	}
	pf := filepath.Join(m.record, pidFile)
	f, err := qsd.StartFuse(context.Background(), qsd.FuseRequest{Image: qsd.Image{Path: top, Format: "qcow2"},
		Overlay: overlay, File: filepath.Join(m.record, diskFile), PIDFile: pf,
		LogFile: filepath.Join(m.record, "qsd.log"), Inherit: []*os.File{lock}})
	lock.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		qsd.Stop(f.PID)
		exec.Command("umount", "--lazy", f.File).Run()
	})
	if _, err := Unmount(context.Background(), records, mp); err != nil {
		t.Errorf("Unmount: %v", err)
	}
	if qsd.Running(f.PID) {
		t.Errorf("qemu-storage-daemon %d still runs after umount", f.PID)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+f.File+" ") {
		t.Errorf("the FUSE export is still mounted on %s", f.File)
	}
	if left, _ := Mounts(records); len(left) != 0 {
		t.Errorf("records left after umount: %+v", left)
	}
	unlock, err := chain.LockRewriting(folder)
	if err != nil {
		t.Errorf("a prune is refused after umount: %v", err)
	} else {
		unlock()
	}
}
