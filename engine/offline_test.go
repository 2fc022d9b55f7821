package engine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
)

// offlineBed is the fake's vm1, shut off, with real images: vda a qcow2
// of 8 MiB, vdb a raw file of 2 MiB.
func offlineBed(t *testing.T) (bed, map[string]string) {
	t.Helper()
	b := newBed(t)
	disks, err := b.dom.Disks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]string{}
	for _, d := range disks {
		images[d.Target] = d.Source
		size := map[string]string{"vda": "8M", "vdb": "2M"}[d.Target]
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", d.Format, d.Source, size).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
	}
	b.dom.Stop()
	return b, images
}

func qemuIO(t *testing.T, image, format, cmd string) {
	t.Helper()
	if out, err := exec.Command("qemu-io", "-f", format, "-c", cmd, image).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %s: %v: %s", cmd, err, out)
	}
}

func bitmapsOf(t *testing.T, image string) []string {
	t.Helper()
	bitmaps, err := imageInfo(context.Background(), localImages{}, image, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range bitmaps {
		names = append(names, m.Name)
	}
	return names
}

// sumOf is the content checksum of an image as it is now.
func sumOf(t *testing.T, image, format string) string {
	t.Helper()
	s, err := contentsum.File(context.Background(), image, format, contentsum.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

func offlineBackup(t *testing.T, b bed, now time.Time) *chain.Backup {
	t.Helper()
	req := b.request(t)
	req.Now = func() time.Time { return now }
	return runBackup(t, b, req)
}

// A shut-off domain's chain: full, then incremental from the last
// backup's checkpoint, each holding the images as they were; the new
// checkpoint is a bitmap in the qcow2 image and a checkpoint redefined in
// libvirt, the earlier one's bitmap and metadata gone; a raw disk is
// copied whole each time; a lost bitmap makes that disk a full, saying why.
func TestOfflineChain(t *testing.T) {
	b, images := offlineBed(t)
	qemuIO(t, images["vda"], "qcow2", "write -P 0x11 0 1M")
	qemuIO(t, images["vdb"], "raw", "write -P 0x22 0 64k")
	t0 := time.Now().Truncate(time.Second)
	want := func(bk *chain.Backup) {
		t.Helper()
		for disk, format := range map[string]string{"vda": "qcow2", "vdb": "raw"} {
			d, _ := bk.Disk(disk)
			if got := sumOf(t, images[disk], format); d.Checksum != got {
				t.Errorf("backup %s, %s: %s; the image holds %s", bk.Name(), disk, d.Checksum, got)
			}
		}
		if bk.Mode != "offline" {
			t.Errorf("backup %s: mode %q, want offline", bk.Name(), bk.Mode)
		}
		if got := bitmapsOf(t, images["vda"]); !slices.Equal(got, []string{bk.Name()}) {
			t.Errorf("vda's bitmaps after backup %s: %v; want its own alone", bk.Name(), got)
		}
		if got := checkpoints(t, b.dom); !slices.Equal(got, []string{bk.Name()}) {
			t.Errorf("libvirt's checkpoints after backup %s: %v; want its own alone", bk.Name(), got)
		}
		cp, err := b.dom.Checkpoint(context.Background(), bk.Name())
		if err != nil || notOwn(cp, bk) != "" || len(cp.Disks) != 2 || cp.Disks[0].Checkpoint != "bitmap" || cp.Disks[1].Checkpoint != "no" {
			t.Errorf("checkpoint %s: %+v, %v; want vda's bitmap, not vdb", bk.Name(), cp, err)
		}
	}

	full := offlineBackup(t, b, t0)
	if full.Level != chain.Full {
		t.Fatalf("the first backup: %s", full.Level)
	}
	want(full)

	qemuIO(t, images["vda"], "qcow2", "write -P 0x33 2M 64k")
	inc := offlineBackup(t, b, t0.Add(time.Second))
	vda, _ := inc.Disk("vda")
	vdb, _ := inc.Disk("vdb")
	if inc.Level != chain.Incremental || vda.Level != chain.Incremental || vda.Backing != full.Name() || vda.Copied != 64<<10 {
		t.Errorf("the second backup: %s, vda %s on %q, %d bytes copied; want an incremental of the 64 KiB written", inc.Level, vda.Level, vda.Backing, vda.Copied)
	}
	if vdb.Level != chain.Full || !strings.Contains(vdb.Reason, "a raw disk") {
		t.Errorf("vdb: %s (%s); want a full, as a raw disk", vdb.Level, vdb.Reason)
	}
	want(inc)

	// The bitmap lost (as a tool that does not know it might): vda full.
	if err := removeBitmap(context.Background(), localImages{}, images["vda"], inc.Name()); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, images["vda"], "qcow2", "write -P 0x44 4M 64k")
	again := offlineBackup(t, b, t0.Add(2*time.Second))
	if vda, _ := again.Disk("vda"); vda.Level != chain.Full || !strings.Contains(vda.Reason, "holds no bitmap of checkpoint "+inc.Name()) {
		t.Errorf("after the bitmap was lost, vda: %s (%s); want a full that says why", vda.Level, vda.Reason)
	}
	want(again)
	verifiesAll(t, b.dir)

	plan, err := backupDryRun(t, b, b.request(t))
	if err != nil || plan.Level != chain.Incremental || plan.From != again.Name() || !strings.Contains(strings.Join(plan.First, "\n"), "the domain is shut off") {
		t.Errorf("the dry run of the next offline backup: %+v, %v", plan, err)
	}
	req := b.request(t)
	req.Push = true
	if p, err := PrepareBackup(context.Background(), b.dom, req, b.notes); err == nil {
		p.Close()
		t.Errorf("--push of a shut-off domain was prepared")
	} else if !strings.Contains(err.Error(), "--push needs libvirt to run the backup job") {
		t.Errorf("--push of a shut-off domain: %v", err)
	}

}

// An image another process holds open for writing is refused, with what
// was wrong, and nothing changes.
func TestOfflineImageInUse(t *testing.T) {
	b, images := offlineBed(t)
	hold := exec.Command("qemu-io", "-f", "qcow2", "-c", "sleep 120000", images["vda"])
	var out strings.Builder
	hold.Stdout, hold.Stderr = &out, &out
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- hold.Wait() }()
	defer func() { hold.Process.Kill(); <-exited }()
	// On a loaded machine qemu-io may take seconds to open the image.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if lockedByAProcess(images["vda"]) {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu-io, which was to hold the image, exited: %v: %s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-io did not take the image's lock within a minute")
		}
	}
	_, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err == nil || !strings.Contains(err.Error(), "disk vda: "+images["vda"]+" is open for writing by another process") {
		t.Fatalf("backup of an image in use: %v", err)
	}
	if _, err := os.Stat(b.dir); !os.IsNotExist(err) {
		t.Errorf("the refused backup made the folder: %v", err)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints: %v", got)
	}
}

// What a shut-off backup killed half way leaves (a bitmap no checkpoint
// names, even one of the very name the next run picks) goes with the
// folder's next shut-off backup; another folder's bitmaps stay.
func TestOfflineLeftBitmaps(t *testing.T) {
	b, images := offlineBed(t)
	t0 := time.Now().Truncate(time.Second)
	full := offlineBackup(t, b, t0)
	t1 := t0.Add(time.Minute)
	sameName := checkpointBase(t1, full.Folder)
	killedEarlier := checkpointBase(t0.Add(time.Second), full.Folder)
	other := checkpointBase(t0, "0badf00d")
	for _, name := range []string{sameName, killedEarlier, other} {
		if err := addBitmap(context.Background(), localImages{}, images["vda"], name); err != nil {
			t.Fatal(err)
		}
	}
	qemuIO(t, images["vda"], "qcow2", "write -P 0x55 1M 64k")
	next := offlineBackup(t, b, t1)
	if next.Name() != sameName || next.Level != chain.Incremental {
		t.Fatalf("the next backup: %s, %s; want the incremental %s", next.Name(), next.Level, sameName)
	}
	want := []string{other, sameName}
	slices.Sort(want)
	got := bitmapsOf(t, images["vda"])
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("vda's bitmaps: %v; want the new backup's and the other folder's, %v", got, want)
	}
	if d, _ := next.Disk("vda"); d.Copied != 64<<10 || d.Checksum != sumOf(t, images["vda"], "qcow2") {
		t.Errorf("vda: %d bytes copied, %s; want the 64 KiB written and the image's content", d.Copied, d.Checksum)
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
