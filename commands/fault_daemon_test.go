package commands

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

// The fault matrix of issue #14, against the real daemon: a fault lands in
// the middle of a backup job, and then
//   - no checkpoint is left that claims data the folder does not hold,
//   - the chain is whole ('vbackup verify' passes),
//   - the next backup is right: incremental where it can be, full with the
//     reason where it cannot.
// Kept elsewhere, and part of the matrix: SIGTERM and SIGKILL of vbackup
// half-way (TestBackupStoppedHalfWay), Ctrl-C of a push
// (TestBackupPushInterrupted), a full backup folder (TestBackupDiskFull),
// a domain destroyed in a pull (TestBackupDomainStops), a shut-off backup
// killed half-way and the domain started (TestBackupShutOffKilled).

// openOn opens connections to bed, per invocation, as realDaemon does for
// the shared bed.
func openOn(bed *testbed.Bed) OpenFunc {
	return func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error) {
		if uri == "" {
			uri = bed.URI()
		}
		return libvirtconn.Open(ctx, uri, libvirtconn.Options{Debug: debug})
	}
}

// midBackup runs 'vbackup backup DOM --to DIR --json FLAGS...' as its own
// process and calls fault once the job has copied part, not all, of its
// data, while the job still runs (libvirt says so just before). It
// returns the exit status and stderr once the process has ended.
func midBackup(t *testing.T, bed *testbed.Bed, dom, dir string, fault func(), flags ...string) (int, string) {
	t.Helper()
	if !slices.Contains(flags, "--push") {
		// A pull's fetch reads at 64 MiB/s at most: else, from the page
		// cache, it could have read everything before the fault lands (a
		// push is slowed by throttle).
		flags = append(flags, "--bwlimit", "64M")
	}
	r := startJSON(t, append([]string{"-c", bed.URI(), "backup", dom, "--to", dir, "--json"}, flags...)...)
	stderr := &r.stderr
	faulted := false
	if r.midway(0) {
		// libvirt says the job still runs: else it is over already, and
		// not the fault asked for.
		if out, err := bed.TryVirsh("domjobinfo", dom); err == nil && strings.Contains(out, "Backup") {
			fault()
			faulted = true
		}
	}
	err := r.wait()
	if !faulted {
		t.Fatalf("the backup's job ended before the fault could land in it (%v):\n%s", err, stderr.String())
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stderr.String()
}

// throttle slows disk's push block job down to mibs MiB/s as soon as the
// job starts, so that a fault lands while it runs: it waits for the job to
// appear (at most a minute) and reports whether it did.
func throttle(bed *testbed.Bed, dom, disk string, mibs int) <-chan bool {
	done := make(chan bool, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if _, err := bed.TryVirsh("blockjob", dom, disk, "--bandwidth", strconv.Itoa(mibs)); err == nil {
				done <- true
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		done <- false
	}()
	return done
}

// checkpoints lists dom's checkpoints by name.
func checkpoints(t *testing.T, bed *testbed.Bed, dom string) []string {
	t.Helper()
	return strings.Fields(bed.Virsh(t, "checkpoint-list", dom, "--name"))
}

// wantChain checks what every case must leave: the folder's backups at
// the levels given, verify passing, and in libvirt the newest backup's
// checkpoint alone (none of a backup that failed).
func wantChain(t *testing.T, open OpenFunc, bed *testbed.Bed, dom, dir string, levels ...string) {
	t.Helper()
	got := backupLevels(t, dir)
	if strings.Join(got, "|") != strings.Join(levels, "|") {
		t.Errorf("the folder holds %q, want %q", got, levels)
	}
	if r := vb(t, open, "verify", "--from", dir); r.code != ExitOK {
		t.Errorf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if left := hiddenEntries(t, dir); len(left) != 0 {
		t.Errorf("the folder holds %v", left)
	}
	all := storeBackups(t, dir)
	if cps := checkpoints(t, bed, dom); len(all) > 0 && (len(cps) != 1 || cps[0] != all[len(all)-1].Name()) {
		t.Errorf("checkpoints in libvirt: %v, want only the newest backup's, %s", cps, all[len(all)-1].Name())
	}
}

// wantHolds checks that the folder's newest backup holds the disk as it is
// (sums: of the disk now).
func wantHolds(t *testing.T, dir, disk string, sums map[string]string) {
	t.Helper()
	all := storeBackups(t, dir)
	last := all[len(all)-1]
	d, ok := last.Disk(disk)
	if !ok {
		t.Fatalf("backup %s has no disk %s", last.Name(), disk)
	}
	if d.Checksum != sums[disk] {
		t.Errorf("backup %s holds %s of %s, the disk is %s", last.Name(), d.Checksum, disk, sums[disk])
	}
}

// Case 1: libvirtd is restarted (SIGTERM, then started again, as a package
// upgrade does) in the middle of a backup. libvirt 9.0 keeps the job in
// the domain's status XML and QEMU goes on serving it, so the backup
// reconnects and completes: a pull reads on and ends its job on the new
// connection, a push is watched again on it and completes. The next backup
// is an incremental from it.
func TestFaultLibvirtdRestarted(t *testing.T) {
	for _, mode := range []string{"pull", "push"} {
		t.Run(mode, func(t *testing.T) {
			// Its own bed: the restart would cut off every other test's
			// connections to a shared one.
			bed := testbed.Private(t)
			open := openOn(bed)
			dom := bed.Domain(t, "vda:qcow2:1G")
			bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
			dir := filepath.Join(bed.Folder(t), "backups")
			var flags []string
			if mode == "push" {
				flags = []string{"--push"}
			}
			wantCode(t, vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...), ExitOK)
			first := storeBackups(t, dir)[0].Name()

			// A pull reads 512 MiB for seconds; libvirt writes a push,
			// slowed down to 64 MiB/s: 8 s, and libvirtd is back long before.
			bed.Write(t, dom, "vda", 0xaa, 64<<20, 512<<20)
			var throttled <-chan bool
			before := bed.DaemonPID(t)
			var away time.Duration
			fault := func() { away = bed.Restart(t) }
			if mode == "push" {
				throttled = throttle(bed, dom, "vda", 64)
				fault = func() {
					if !<-throttled {
						t.Fatal("the push job never showed to be throttled")
					}
					away = bed.Restart(t)
				}
			}
			code, stderr := midBackup(t, bed, dom, dir, fault, flags...)
			if code != ExitOK {
				t.Fatalf("the backup through a libvirtd restart: exit %d\n%s", code, stderr)
			}
			if after := bed.DaemonPID(t); after == before {
				t.Fatalf("libvirtd was not restarted (pid %d)", after)
			}
			t.Logf("libvirtd was away %s", away)
			for _, want := range []string{"libvirtd went away", "reconnected"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if mode == "push" && !strings.Contains(stderr, "Reconnected; the job still runs.") {
				t.Errorf("the push job was not watched again after the restart:\n%s", stderr)
			}
			wantHolds(t, dir, "vda", sourceSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "incremental: vda=incremental")

			// The next backup builds on the one made through the restart.
			bed.Write(t, dom, "vda", 0xbb, 900<<20, 1<<20)
			r := vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...)
			wantCode(t, r, ExitOK)
			second := storeBackups(t, dir)[1].Name()
			if !strings.Contains(r.stdout+r.stderr, "incremental (changes since backup "+second+")") {
				t.Errorf("the backup after the restart is not an incremental from %s (the first was %s):\n%s%s", second, first, r.stdout, r.stderr)
			}
			wantHolds(t, dir, "vda", sourceSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "incremental: vda=incremental", "incremental: vda=incremental")
			if got := topLayerData(t, storeBackups(t, dir)[2].File(storeBackups(t, dir)[2].Disks[0])); got != "943718400+1048576" {
				t.Errorf("the last overlay holds %s, want only the 1 MiB written after the restart", got)
			}
		})
	}
}

// liveSums sums a shut-off domain's disk images as a guest would read them.
func liveSums(t *testing.T, bed *testbed.Bed, dom string, disks ...string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for _, disk := range disks {
		raw := filepath.Join(t.TempDir(), disk+".raw")
		testbed.Run(t, "qemu-img", "convert", "-U", "-O", "raw", bed.DiskPath(dom, disk), raw)
		sums[disk] = fileSum(t, raw)
	}
	return sums
}

// bitmapFlags lists the persistent bitmaps of a qcow2 image with their
// flags, as qemu-img info reports them ("NAME:in-use,auto").
func bitmapFlags(t *testing.T, image string) []string {
	t.Helper()
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps []struct {
					Name  string
					Flags []string
				}
			}
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "-U", "--output=json", image)), &info); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range info.FormatSpecific.Data.Bitmaps {
		out = append(out, b.Name+":"+strings.Join(b.Flags, ","))
	}
	return out
}

// Case 2: QEMU is killed (kill -9) in the middle of a backup. The backup
// fails and its checkpoint goes; the image's bitmaps are left in use
// (inconsistent), so the next backup, of the shut-off domain, is a full one
// saying why, and the one after it, the domain running again, an
// incremental from that full.
func TestFaultQEMUKilled(t *testing.T) {
	for _, mode := range []string{"pull", "push"} {
		t.Run(mode, func(t *testing.T) {
			open, bed := realDaemon(t)
			dom := bed.Domain(t, "vda:qcow2:1G")
			bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
			dir := filepath.Join(bed.Folder(t), "backups")
			var flags []string
			if mode == "push" {
				flags = []string{"--push"}
			}
			wantCode(t, vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...), ExitOK)
			first := storeBackups(t, dir)[0].Name()
			// QEMU stores a bitmap in the image when it closes it, and marks
			// it in use when it opens it again: stopped and started, the
			// domain's image carries the checkpoint's bitmap, which the kill
			// then leaves in use.
			bed.Virsh(t, "destroy", dom)
			if got := bitmapFlags(t, bed.DiskPath(dom, "vda")); strings.Join(got, " ") != first+":auto" {
				t.Fatalf("the image's bitmaps after a clean stop: %v, want %s:auto", got, first)
			}
			bed.Virsh(t, "start", dom)
			bed.Write(t, dom, "vda", 0xaa, 64<<20, 512<<20)

			pid := bed.QEMUPID(t, dom)
			var throttled <-chan bool
			if mode == "push" {
				throttled = throttle(bed, dom, "vda", 64)
			}
			code, stderr := midBackup(t, bed, dom, dir, func() {
				if throttled != nil && !<-throttled {
					t.Fatal("the push job never showed to be throttled")
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}, flags...)
			if code != ExitFailure {
				t.Fatalf("the backup whose QEMU was killed: exit %d, want %d\n%s", code, ExitFailure, stderr)
			}
			for _, want := range []string{"Checkpoint vbackup-", "deleted", "is as it was"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, "while cleaning up") {
				t.Errorf("the cleanup reports problems:\n%s", stderr)
			}
			wantChain(t, open, bed, dom, dir, "full: vda=full")
			if cps := checkpoints(t, bed, dom); len(cps) != 1 || cps[0] != first {
				t.Errorf("checkpoints after the kill: %v, want %s alone", cps, first)
			}
			// What the kill left: the bitmap still in use, inconsistent.
			if got := bitmapFlags(t, bed.DiskPath(dom, "vda")); strings.Join(got, " ") != first+":in-use,auto" {
				t.Errorf("the image's bitmaps after the kill: %v, want %s:in-use,auto", got, first)
			}

			// The domain is shut off: its images are read directly, and the
			// broken bitmap is not built on.
			r := vb(t, open, "backup", dom, "--to", dir)
			wantCode(t, r, ExitOK)
			if out := r.stdout + r.stderr; !strings.Contains(out, ": full (") || !strings.Contains(out, "inconsistent") {
				t.Errorf("the backup after the kill is not a full saying the bitmap is inconsistent:\n%s", out)
			}
			wantHolds(t, dir, "vda", liveSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "full: vda=full")

			// Running again, the next backup is an incremental from that full.
			bed.Virsh(t, "start", dom)
			bed.Write(t, dom, "vda", 0xbb, 900<<20, 1<<20)
			r = vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...)
			wantCode(t, r, ExitOK)
			second := storeBackups(t, dir)[1].Name()
			if !strings.Contains(r.stdout+r.stderr, "incremental (changes since backup "+second+")") {
				t.Errorf("the backup after the restart of QEMU is not an incremental from %s:\n%s%s", second, r.stdout, r.stderr)
			}
			wantHolds(t, dir, "vda", sourceSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "full: vda=full", "incremental: vda=incremental")
		})
	}
}

// Case 3: the domain stops (virsh destroy: QEMU is told to quit, and
// closes its images cleanly) in the middle of a backup. The backup fails
// and its checkpoint goes, from libvirt and from the image; the bitmap of
// the last backup was stored whole, so the next backup, of the shut-off
// domain, is an incremental from it, and so is the one after it, running.
func TestFaultDomainStopped(t *testing.T) {
	for _, mode := range []string{"pull", "push"} {
		t.Run(mode, func(t *testing.T) {
			open, bed := realDaemon(t)
			dom := bed.Domain(t, "vda:qcow2:1G")
			bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
			dir := filepath.Join(bed.Folder(t), "backups")
			var flags []string
			if mode == "push" {
				flags = []string{"--push"}
			}
			wantCode(t, vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...), ExitOK)
			first := storeBackups(t, dir)[0].Name()
			bed.Write(t, dom, "vda", 0xaa, 64<<20, 512<<20)

			var throttled <-chan bool
			if mode == "push" {
				throttled = throttle(bed, dom, "vda", 64)
			}
			code, stderr := midBackup(t, bed, dom, dir, func() {
				if throttled != nil && !<-throttled {
					t.Fatal("the push job never showed to be throttled")
				}
				bed.Virsh(t, "destroy", dom)
			}, flags...)
			if code != ExitFailure {
				t.Fatalf("the backup whose domain stopped: exit %d, want %d\n%s", code, ExitFailure, stderr)
			}
			for _, want := range []string{"Checkpoint vbackup-", "deleted", "is as it was"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, "while cleaning up") {
				t.Errorf("the cleanup reports problems:\n%s", stderr)
			}
			wantChain(t, open, bed, dom, dir, "full: vda=full")
			if got := bitmapFlags(t, bed.DiskPath(dom, "vda")); strings.Join(got, " ") != first+":auto" {
				t.Errorf("the image's bitmaps after the stop: %v, want %s:auto alone", got, first)
			}

			r := vb(t, open, "backup", dom, "--to", dir)
			wantCode(t, r, ExitOK)
			if !strings.Contains(r.stdout+r.stderr, "incremental (changes since backup "+first+")") {
				t.Errorf("the backup of the stopped domain is not an incremental from %s:\n%s%s", first, r.stdout, r.stderr)
			}
			wantHolds(t, dir, "vda", liveSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "incremental: vda=incremental")

			bed.Virsh(t, "start", dom)
			bed.Write(t, dom, "vda", 0xbb, 900<<20, 1<<20)
			r = vb(t, open, append([]string{"backup", dom, "--to", dir}, flags...)...)
			wantCode(t, r, ExitOK)
			second := storeBackups(t, dir)[1].Name()
			if !strings.Contains(r.stdout+r.stderr, "incremental (changes since backup "+second+")") {
				t.Errorf("the backup of the domain started again is not an incremental from %s:\n%s%s", second, r.stdout, r.stderr)
			}
			wantHolds(t, dir, "vda", sourceSums(t, bed, dom, "vda"))
			wantChain(t, open, bed, dom, dir, "full: vda=full", "incremental: vda=incremental", "incremental: vda=incremental")
		})
	}
}

// Case 4: the NBD server closes the connections in the middle of a pull's
// fetch and goes away (QEMU's NBD server stopped under the job). The fetch
// tries a new connection, which cannot be had: the backup fails cleanly,
// its checkpoint goes, and the next backup is an incremental from the last
// complete one that holds every change since.
func TestFaultNBDDropped(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:1G")
	bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
	dir := filepath.Join(bed.Folder(t), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0].Name()
	bed.Write(t, dom, "vda", 0xaa, 64<<20, 512<<20)

	code, stderr := midBackup(t, bed, dom, dir, func() {
		bed.Virsh(t, "qemu-monitor-command", dom, `{"execute":"nbd-server-stop"}`)
	})
	if code != ExitFailure {
		t.Fatalf("the backup whose NBD connections were closed: exit %d, want %d\n%s", code, ExitFailure, stderr)
	}
	for _, want := range []string{"reading the exports", "fetching it again from a new connection", "attempt 2 of 3", "Checkpoint vbackup-", "deleted", "is as it was"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "while cleaning up") {
		t.Errorf("the cleanup reports problems:\n%s", stderr)
	}
	wantChain(t, open, bed, dom, dir, "full: vda=full")
	if out := bed.Virsh(t, "domjobinfo", dom); !strings.Contains(out, "None") {
		t.Errorf("a job still runs after the failed backup:\n%s", out)
	}

	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout+r.stderr, "incremental (changes since backup "+first+")") {
		t.Errorf("the backup after the dropped connections is not an incremental from %s:\n%s%s", first, r.stdout, r.stderr)
	}
	wantHolds(t, dir, "vda", sourceSums(t, bed, dom, "vda"))
	wantChain(t, open, bed, dom, dir, "full: vda=full", "incremental: vda=incremental")
}

// Case 4, a connection dropped and the server still there: a proxy of the
// test's own stands in front of the pull job's socket and closes the fetch's
// connections after 16 MiB. backup-fetch reads the disk again from new
// connections (the export is the job's point in time), and the file holds
// the disk whole.
func TestFaultNBDCutThenFetchedAgain(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:256M")
	bed.Write(t, dom, "vda", 0x11, 0, 96<<20)
	sock := filepath.Join(bed.Folder(t), "nbd.sock")
	wantCode(t, vb(t, open, "backup-begin", dom, "--pull", "--checkpoint", "f1", "--server", "unix:"+sock), ExitOK)
	defer vb(t, open, "backup-end", dom)
	// QEMU's socket moves aside; the proxy takes its name, which the job's
	// XML gives backup-fetch.
	qemuSock := sock + ".qemu"
	if err := os.Rename(sock, qemuSock); err != nil {
		t.Fatal(err)
	}
	proxy := testbed.NewCutProxy(t, sock, qemuSock, 16<<20, 1)
	want := sourceSums(t, bed, dom, "vda")
	dir := t.TempDir()
	r := vb(t, open, "backup-fetch", dom, "--to", dir, "--format", "raw")
	wantCode(t, r, ExitOK)
	if proxy.Made() != 1 {
		t.Fatalf("the proxy cut the connections %d times, want once", proxy.Made())
	}
	wantStderr(t, r, "connection lost", "fetching it again from a new connection")
	if got := fileSum(t, filepath.Join(dir, "vda.raw")); got != want["vda"] {
		t.Errorf("the fetched disk is %s, the disk %s", got, want["vda"])
	}
}
