package fetch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// A second fetch into a folder that one is writing is refused before it
// touches anything, with the first's .partial left alone; once the first
// is done, the folder is free again.
func TestFetchIntoBusyFolder(t *testing.T) {
	testbed.Need(t, "nbdkit")
	uri, _ := serve(t, "vda", "nbdkit", "-f", "--exit-with-parent", "-U", "SOCK", "pattern", "size=8M")
	dir := t.TempDir()
	unlock, err := lockFolders([]Disk{{Path: filepath.Join(dir, "vda.raw")}})
	if err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dir, "vda.raw.partial")
	if err := os.WriteFile(partial, []byte("the other fetch's"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), []Disk{{Name: "vda", URI: uri, Path: filepath.Join(dir, "vda.raw"), Format: "raw"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "another vbackup command is writing into "+dir) {
		t.Fatalf("fetch into a busy folder: %v; want it refused", err)
	}
	if b, err := os.ReadFile(partial); err != nil || string(b) != "the other fetch's" {
		t.Errorf("the other fetch's .partial was touched: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "vda.raw")); err == nil {
		t.Error("the refused fetch wrote vda.raw")
	}
	unlock()
	fetchOne(t, Disk{Name: "vda", URI: uri, Path: filepath.Join(dir, "vda.raw"), Format: "raw"})
}

// A file that takes the final name during a fetch is not written over: the
// copy fails, says so, and is removed.
func TestPlaceNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	partial, path := filepath.Join(dir, "vda.qcow2.partial"), filepath.Join(dir, "vda.qcow2")
	for name, body := range map[string]string{partial: "new", path: "the user's"} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err := place(partial, path)
	if !errors.Is(err, errExists) || !strings.Contains(err.Error(), "never writes over a file") {
		t.Errorf("place over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "the user's" {
		t.Errorf("%s now holds %q", path, b)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := place(partial, path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("%s holds %q after placing", path, b)
	}
	if _, err := os.Lstat(partial); err == nil {
		t.Error("the .partial is still there after placing")
	}
	if err := checkedRename(path, path+".x"); err != nil {
		t.Errorf("checkedRename to a free name: %v", err)
	}
}

// A fetch of two disks, one of which fails, keeps neither file: run again,
// it starts from the same folder. A file that was there before is kept.
func TestFetchFailureKeepsNoCompleteDisk(t *testing.T) {
	testbed.Need(t, "nbdkit")
	good, _ := serve(t, "vda", "nbdkit", "-f", "--exit-with-parent", "-U", "SOCK", "pattern", "size=1M")
	bad, _ := serve(t, "vdb", "nbdkit", "-f", "--exit-with-parent", "-U", "SOCK", "--filter=delay", "--filter=error", "pattern", "size=64M",
		"error-pread=EIO", "error-pread-rate=1", "delay-read=1")
	dir := t.TempDir()
	other := filepath.Join(dir, "vdc.raw")
	if err := os.WriteFile(other, []byte("the user's"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), []Disk{
		{Name: "vda", URI: good, Path: filepath.Join(dir, "vda.raw"), Format: "raw"},
		{Name: "vdb", URI: bad, Path: filepath.Join(dir, "vdb.raw"), Format: "raw"},
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("fetch with a failing disk: %v; want EIO", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "vdc.raw" {
		t.Errorf("after the failed fetch the folder holds %v; want only vdc.raw", entries)
	}
}
