package chain

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A second holder waits for the first; the records' folder, removed with
// its last record while the first holds it, is made again for the second;
// and once nothing is recorded nothing is left in the backup folder.
func TestLockInUse(t *testing.T) {
	dir := t.TempDir()
	unlock, err := LockInUse(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteInUse(dir, InUse{Domain: "a", Backup: "b1"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan func())
	go func() {
		u, err := LockInUse(dir)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case <-got:
		t.Fatal("a second LockInUse did not wait for the first")
	case <-time.After(200 * time.Millisecond):
	}
	if err := RemoveInUse(dir, "a"); err != nil {
		t.Fatal(err)
	}
	unlock()
	var second func()
	select {
	case second = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the second LockInUse still waits after the first let go")
	}
	if _, err := os.Stat(filepath.Join(dir, inUseDir)); err != nil {
		t.Errorf("the second holder holds no records' folder: %v", err)
	}
	// The second holder's lock must exclude a third: it is on the folder
	// that exists, not on the one the first removed.
	third := make(chan func())
	go func() {
		u, _ := LockInUse(dir)
		third <- u
	}()
	select {
	case <-third:
		t.Fatal("a third LockInUse did not wait for the second")
	case <-time.After(200 * time.Millisecond):
	}
	second()
	(<-third)()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("with no record, the folder holds %v after the locks", entries)
	}
}
