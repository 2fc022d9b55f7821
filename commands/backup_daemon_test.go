package commands

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// These run backup jobs on a real libvirtd + QEMU and prove each backup by
// reading it back with the reference tools: qemu-img compare and map,
// nbdcopy, nbdinfo --map.

func TestPushFullThenIncremental(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
	bed.Write(t, dom, "vdb", 0x22, 1<<20, 2<<20)
	dir := bed.Folder(t)

	r := vb(t, open, "backup-begin", dom, "--target-dir", dir, "--checkpoint", "c1")
	wantCode(t, r, ExitOK)
	full := map[string]string{"vda": dir + "/" + dom + ".vda.c1.qcow2", "vdb": dir + "/" + dom + ".vdb.c1.qcow2"}
	for disk, path := range full {
		if !strings.Contains(r.stdout, disk+"    -> "+path+" (full)") {
			t.Errorf("begin does not name %s's target %s:\n%s", disk, path, r.stdout)
		}
	}
	waitBackupDone(t, open, dom)
	for disk, path := range full {
		compareImages(t, bed.DiskPath(dom, disk), "qcow2", path, "qcow2")
	}

	// The guest writes 512 KiB; the incremental holds exactly that.
	bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
	r = vb(t, open, "backup-begin", dom, "--target-dir", dir, "--incremental", "c1", "--checkpoint", "c2")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "(incremental from c1)") {
		t.Errorf("begin output:\n%s", r.stdout)
	}
	waitBackupDone(t, open, dom)
	inc := map[string]string{"vda": dir + "/" + dom + ".vda.c2.qcow2", "vdb": dir + "/" + dom + ".vdb.c2.qcow2"}
	if got := topLayerData(t, inc["vda"]); got != "4194304+524288" {
		t.Errorf("vda incremental holds %s, want exactly 4194304+524288", got)
	}
	if got := topLayerData(t, inc["vdb"]); got != "" {
		t.Errorf("vdb incremental holds %s, want nothing", got)
	}
	// Rebased onto the full, each incremental reads as its disk now.
	for disk, path := range inc {
		testbed.Run(t, "qemu-img", "rebase", "-u", "-F", "qcow2", "-b", full[disk], path)
		compareImages(t, bed.DiskPath(dom, disk), "qcow2", path, "qcow2")
	}
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "c1\nc2\n\n" {
		t.Errorf("checkpoints: %q", r.stdout)
	}
}

func TestPullFullThenIncremental(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
	sock := bed.Folder(t) + "/nbd.sock"
	out := t.TempDir()

	r := vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "p1", "--server", "unix:"+sock)
	wantCode(t, r, ExitOK)
	uri := "nbd+unix:///vda?socket=" + sock
	if !strings.Contains(r.stdout, "vda    "+uri) {
		t.Fatalf("begin does not print the export's URI %s:\n%s", uri, r.stdout)
	}
	testbed.Run(t, "nbdcopy", uri, out+"/full.raw")
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/full.raw", "raw")
	r = vb(t, open, "backup-end", dom)
	wantCode(t, r, ExitOK)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after backup-end: %v", err)
	}

	bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
	r = vb(t, open, "backup-begin", dom, "--pull", "--incremental", "p1", "--checkpoint", "p2", "--server", "unix:"+sock)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "meta context qemu:dirty-bitmap:backup-vda (incremental from p1)") {
		t.Errorf("begin does not name the meta context:\n%s", r.stdout)
	}
	if got := dirtyExtents(t, uri, "qemu:dirty-bitmap:backup-vda"); got != "4194304+524288" {
		t.Errorf("dirty extents %s, want exactly 4194304+524288", got)
	}
	testbed.Run(t, "nbdcopy", uri, out+"/now.raw")
	compareImages(t, bed.DiskPath(dom, "vda"), "qcow2", out+"/now.raw", "raw")
	wantCode(t, vb(t, open, "backup-end", dom), ExitOK)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after backup-end: %v", err)
	}
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "p1\np2\n\n" {
		t.Errorf("checkpoints: %q", r.stdout)
	}
}

// A push that does not complete leaves no checkpoint claiming its data, and
// the next incremental from the last good checkpoint still sees every change.
func TestUnfinishedPushLeavesNoCheckpoint(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:1G")
	bed.Write(t, dom, "vda", 0x5a, 0, 768<<20)
	dir := bed.Folder(t)
	wantCode(t, vb(t, open, "backup-begin", dom, "--target-dir", dir, "--checkpoint", "c1"), ExitOK)
	waitBackupDone(t, open, dom)
	bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)

	// Ended early: 768 MiB take far longer than the next call.
	wantCode(t, vb(t, open, "backup-begin", dom, "--target-dir", dir, "--checkpoint", "c2"), ExitOK)
	r := vb(t, open, "backup-end", dom)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "cancelled before it completed") {
		t.Fatalf("backup-end did not cancel the push (did it finish first?):\n%s", r.stdout)
	}
	wantStderr(t, r, "Checkpoint c2 deleted")
	if _, err := os.Stat(dir + "/" + dom + ".vda.c2.qcow2"); !os.IsNotExist(err) {
		t.Errorf("the cancelled push left its target: %v", err)
	}

	// Failed: the daemon cannot write the target folder.
	locked := filepath.Join(bed.Dir(), "o", "root-only-"+dom)
	if err := os.MkdirAll(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(locked) })
	r = vb(t, open, "backup-begin", dom, "--target-dir", locked, "--checkpoint", "c3")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "the backup did not start", "Permission denied")

	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "c1\n\n" {
		t.Fatalf("checkpoints after the unfinished pushes: %q, want only c1", r.stdout)
	}
	wantCode(t, vb(t, open, "backup-begin", dom, "--target-dir", dir, "--incremental", "c1", "--checkpoint", "c4"), ExitOK)
	waitBackupDone(t, open, dom)
	if got := topLayerData(t, dir+"/"+dom+".vda.c4.qcow2"); got != "4194304+524288" {
		t.Errorf("incremental after the unfinished pushes holds %s, want 4194304+524288", got)
	}
}

// The job-wide view while a job runs, and after.
func TestBackupStatus(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	r := vb(t, open, "backup-status", dom)
	wantCode(t, r, ExitOK)
	if r.stdout != "Domain "+dom+" has no backup job running.\n" {
		t.Errorf("idle status: %q", r.stdout)
	}
	sock := bed.Folder(t) + "/nbd.sock"
	wantCode(t, vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "s1", "--server", "unix:"+sock), ExitOK)
	r = vb(t, open, "backup-status", dom, "--json")
	wantCode(t, r, ExitOK)
	var st jsonStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if st.State != "running" || st.Mode != "pull" || st.Checkpoint != "s1" || st.Scratch == nil || st.Scratch.Total != 64<<20 ||
		len(st.Disks) != 1 || st.Disks[0].Name != "vda" || st.Disks[0].State != "exporting" {
		t.Errorf("status of a pull: %+v", st)
	}
	r = vb(t, open, "backup-dumpxml", dom, "--xpath", "//server/@socket")
	if r.stdout != ` socket="`+sock+`"`+"\n" {
		t.Errorf("backup-dumpxml --xpath: %q", r.stdout)
	}
	// Only one job at a time.
	r = vb(t, open, "backup-begin", dom, "--pull")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "already has a job running", "backup-end "+dom)
	wantCode(t, vb(t, open, "backup-end", dom), ExitOK)
	r = vb(t, open, "backup-end", dom)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "has no backup job running")
	r = vb(t, open, "backup-dumpxml", dom)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "has no backup job running")
}

// waitBackupDone waits for the domain's job to end and requires that it
// completed.
func waitBackupDone(t *testing.T, open OpenFunc, dom string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := vb(t, open, "backup-status", dom, "--json")
		var st jsonStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("backup-status --json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		if st.State != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("backup still running after 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := vb(t, open, "backup-status", dom, "--completed", "--json")
	var st jsonStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != "completed" || st.Success == nil || !*st.Success {
		t.Fatalf("the backup did not complete: %v\n%s", err, r.stdout)
	}
}

// compareImages requires qemu-img compare to find two images identical.
func compareImages(t *testing.T, a, fa, b, fb string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-U", "-f", fa, "-F", fb, a, b).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Images are identical") {
		t.Errorf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	}
}

// topLayerData lists the data extents an image holds itself (not its
// backing chain), merged, as "start+length ...".
func topLayerData(t *testing.T, image string) string {
	t.Helper()
	var extents []struct {
		Start, Length int64
		Depth         int
		Data          bool
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "map", "-U", "--output=json", image)), &extents); err != nil {
		t.Fatal(err)
	}
	var spans [][2]int64
	for _, e := range extents {
		if e.Depth != 0 || !e.Data {
			continue
		}
		if n := len(spans); n > 0 && spans[n-1][0]+spans[n-1][1] == e.Start {
			spans[n-1][1] += e.Length
			continue
		}
		spans = append(spans, [2]int64{e.Start, e.Length})
	}
	return joinSpans(spans)
}

// dirtyExtents lists the extents a meta context marks dirty, as nbdinfo
// --map reports them.
func dirtyExtents(t *testing.T, uri, context string) string {
	t.Helper()
	var spans [][2]int64
	re := regexp.MustCompile(`^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)`)
	for _, line := range strings.Split(testbed.Run(t, "nbdinfo", "--map="+context, uri), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil || m[4] != "dirty" {
			continue
		}
		start, _ := strconv.ParseInt(m[1], 10, 64)
		length, _ := strconv.ParseInt(m[2], 10, 64)
		spans = append(spans, [2]int64{start, length})
	}
	return joinSpans(spans)
}

func joinSpans(spans [][2]int64) string {
	var parts []string
	for _, s := range spans {
		parts = append(parts, strconv.FormatInt(s[0], 10)+"+"+strconv.FormatInt(s[1], 10))
	}
	return strings.Join(parts, " ")
}
