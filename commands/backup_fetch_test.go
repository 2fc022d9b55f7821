package commands

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// backup-fetch reads a pull job's exports itself: the full and the overlay
// chain each compare identical with the disk at that checkpoint.
func TestFetchFullAndIncrementalChain(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:256M", "vdb:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 48<<20)
	bed.Write(t, dom, "vda", 0x33, 200<<20, 8<<20)
	bed.Write(t, dom, "vdb", 0x22, 1<<20, 4<<20)
	out := t.TempDir()

	wantCode(t, vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "f1", "--server", "unix:"+bed.Folder(t)+"/s"), ExitOK)
	r := vb(t, open, "backup-fetch", dom, "--to", out+"/full")
	wantCode(t, r, ExitOK)
	r2 := vb(t, open, "backup-fetch", dom, "--to", out+"/raw", "--format", "raw", "--disk", "vda")
	wantCode(t, r2, ExitOK)
	// The copy of the disk at f1, before the job ends.
	for _, disk := range []string{"vda", "vdb"} {
		compareImages(t, bed.DiskPath(dom, disk), "qcow2", out+"/full/"+disk+".qcow2", "qcow2")
	}
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/raw/vda.raw", "raw")
	if _, err := os.Stat(out + "/raw/vdb.raw"); !os.IsNotExist(err) {
		t.Errorf("--disk vda fetched vdb too: %v", err)
	}
	if fi, _ := os.Stat(out + "/raw/vda.raw"); fi == nil || usedBytes(fi) > 64<<20 {
		t.Errorf("the raw file is not sparse: %v", fi)
	}
	// Fetching again never overwrites.
	r = vb(t, open, "backup-fetch", dom, "--to", out+"/full")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "exists already", "never writes over")
	wantCode(t, vb(t, open, "backup-end", dom), ExitOK)

	bed.Write(t, dom, "vda", 0xcd, 4<<20, 1<<20)
	wantCode(t, vb(t, open, "backup-begin", dom, "--pull", "--incremental", "f1", "--checkpoint", "f2", "--server", "unix:"+bed.Folder(t)+"/s"), ExitOK)
	r = vb(t, open, "backup-fetch", dom, "--to", out+"/inc", "--backing", out+"/full")
	wantCode(t, r, ExitOK)
	if got := topLayerData(t, out+"/inc/vda.qcow2"); got != "4194304+1048576" {
		t.Errorf("vda overlay holds %s, want exactly the changed 4194304+1048576", got)
	}
	if got := topLayerData(t, out+"/inc/vdb.qcow2"); got != "" {
		t.Errorf("vdb overlay holds %s, want nothing", got)
	}
	for _, disk := range []string{"vda", "vdb"} {
		compareImages(t, bed.DiskPath(dom, disk), "qcow2", out+"/inc/"+disk+".qcow2", "qcow2")
	}
	r = vb(t, open, "backup-fetch", dom, "--to", out+"/inc-raw", "--format", "raw")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "a raw file cannot keep apart", "--format qcow2")
	wantCode(t, vb(t, open, "backup-end", dom), ExitOK)
}

// A fetch that fails half-way leaves no file that looks complete, and no
// .partial either.
func TestFetchFailureLeavesNothing(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bigDomain(t, bed, 1024, 512)
	out := t.TempDir()
	wantCode(t, vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "g1", "--server", "unix:"+bed.Folder(t)+"/s"), ExitOK)
	var r result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r = vb(t, open, "backup-fetch", dom, "--to", out, "--format", "raw")
	}()
	// The .partial appearing means the copy has begun; 1 GiB takes far
	// longer than the abort.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(out, "vda.raw.partial")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fetch did not start within 30 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	bed.Virsh(t, "domjobabort", dom) // the exports go away mid-read
	wg.Wait()
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "nothing incomplete was kept")
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

// backup-begin --pull --fetch: begin, fetch and end in one step; a failed
// fetch ends the job with its checkpoint discarded.
func TestBeginFetch(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x44, 0, 8<<20)
	out := t.TempDir()
	r := vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "h1", "--fetch", out+"/h1")
	wantCode(t, r, ExitOK)
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/h1/vda.qcow2", "qcow2")
	if st := vb(t, open, "backup-status", dom); !strings.Contains(st.stdout, "has no backup job running") {
		t.Errorf("the job still runs after --fetch:\n%s", st.stdout)
	}

	// A file in the way: the fetch fails, the job ends, h2 is discarded.
	if err := os.MkdirAll(out+"/h2", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "h2", "vda.qcow2"), []byte("older"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = vb(t, open, "backup-begin", dom, "--pull", "--incremental", "h1", "--checkpoint", "h2", "--fetch", out+"/h2")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "exists already", "Checkpoint h2 deleted", "job was ended")
	if b, _ := os.ReadFile(filepath.Join(out, "h2", "vda.qcow2")); string(b) != "older" {
		t.Errorf("the file in the way was touched: %q", b)
	}
	if cps := vb(t, open, "checkpoint-list", dom, "--name"); cps.stdout != "h1\n\n" {
		t.Errorf("checkpoints: %q", cps.stdout)
	}
}
