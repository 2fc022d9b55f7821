package commands

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/chain"
	"vbackup/contentsum"
	"vbackup/internal/testbed"
)

// sourceSums takes the content checksum of each disk's image, with the
// domain paused so that nothing changes while it is read, through qemu-img
// and the reference implementation: independent of what vbackup reads.
func sourceSums(t *testing.T, bed *testbed.Bed, dom string, disks ...string) map[string]string {
	t.Helper()
	bed.Virsh(t, "suspend", dom)
	defer bed.Virsh(t, "resume", dom)
	sums := map[string]string{}
	for _, disk := range disks {
		src := bed.DiskPath(dom, disk)
		raw := filepath.Join(t.TempDir(), disk+".raw")
		testbed.Run(t, "qemu-img", "convert", "-U", "-O", "raw", src, raw)
		sums[disk] = fileSum(t, raw)
		os.Remove(raw)
	}
	return sums
}

// fileSum is the reference checksum of a raw file.
func fileSum(t *testing.T, raw string) string {
	t.Helper()
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	s, err := contentsum.OfReader(f, uint64(fi.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return s.String()
}

// imageSum is the reference checksum of any image, through qemu-img.
func imageSum(t *testing.T, image, format string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "image.raw")
	testbed.Run(t, "qemu-img", "convert", "-U", "-f", format, "-O", "raw", image, raw)
	defer os.Remove(raw)
	return fileSum(t, raw)
}

func backupLevels(t *testing.T, dir string) []string {
	t.Helper()
	s, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range s.Backups {
		l := b.Level + ":"
		for _, d := range b.Disks {
			l += " " + d.Name + "=" + d.Level
		}
		out = append(out, l)
	}
	return out
}

func storeBackups(t *testing.T, dir string) []*chain.Backup {
	t.Helper()
	s, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s.Backups
}

// The proof: full, write A, incremental, write B, incremental; each
// point restores to the disk as it was; verify names a damaged backup.
func TestBackupChainRestoreVerify(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	bed.Write(t, dom, "vda", 0x11, 0, 8<<20)
	bed.Write(t, dom, "vdb", 0x22, 1<<20, 2<<20)
	dir := filepath.Join(t.TempDir(), "backups")

	var points []map[string]string
	r := vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	for _, want := range []string{": full (no backup of the domain in this folder yet)", "vdb    full: a raw disk: it cannot carry a checkpoint bitmap", "complete: full"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the first backup's output lacks %q:\n%s", want, r.stdout)
		}
	}
	points = append(points, sourceSums(t, bed, dom, "vda", "vdb"))
	if _, err := os.Stat("/run/vbackup/" + dom); os.Geteuid() == 0 && !os.IsNotExist(err) {
		t.Errorf("the pull job's socket folder is still there: %v", err)
	}

	bed.Write(t, dom, "vda", 0xaa, 20<<20, 1<<20) // A
	bed.Write(t, dom, "vdb", 0xab, 0, 64<<10)
	r = vb(t, open, "backup", dom, "--to", dir)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, ": incremental (changes since backup vbackup-") {
		t.Errorf("the second backup is not incremental:\n%s", r.stdout)
	}
	points = append(points, sourceSums(t, bed, dom, "vda", "vdb"))

	if strings.Contains(r.stderr, "reading all") {
		t.Errorf("the incremental did not reuse the full backup's chunk digests:\n%s", r.stderr)
	}
	// The full keeps every chunk's digest; the incremental only those of
	// the chunks it changed (one MiB: one record of index and digest), so
	// that what it adds grows with the change, not the disk.
	if data, err := os.ReadFile(filepath.Join(storeBackups(t, dir)[0].Dir, "vda.sums")); err != nil || len(data) != 64*32 {
		t.Fatalf("the full's vda.sums: %d bytes, %v; want 32 per MiB of the disk", len(data), err)
	}
	sums := filepath.Join(storeBackups(t, dir)[1].Dir, "vda.changed.sums")
	data, err := os.ReadFile(sums)
	if err != nil || len(data) != 40 {
		t.Fatalf("%s: %d bytes, %v; want one record of 40 bytes for the 1 MiB changed", sums, len(data), err)
	}
	// Damaged chunk digests are never trusted: the next checksum reads all.
	data[20] ^= 1
	os.WriteFile(sums, data, 0o644)

	bed.Write(t, dom, "vda", 0xbb, 40<<20, 2<<20) // B
	r = vb(t, open, "backup", dom, "--to", dir, "--level", "inc")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "the chunk digests of vda in backup "+storeBackups(t, dir)[1].Name()+" do not match its checksum: reading all of it")
	data[20] ^= 1
	os.WriteFile(sums, data, 0o644)
	points = append(points, sourceSums(t, bed, dom, "vda", "vdb"))

	if got, want := strings.Join(backupLevels(t, dir), "|"), "full: vda=full vdb=full|incremental: vda=incremental vdb=full|incremental: vda=incremental vdb=full"; got != want {
		t.Fatalf("levels = %s, want %s", got, want)
	}
	backups := storeBackups(t, dir)
	// Only the change is in an overlay.
	if got := topLayerData(t, backups[1].File(chain.Disk{File: "vda.qcow2"})); got != "20971520+1048576" {
		t.Errorf("the first incremental of vda holds %s, want 20971520+1048576 (A)", got)
	}
	for i, b := range backups {
		for _, d := range b.Disks {
			if d.Checksum != points[i][d.Name] {
				t.Errorf("backup %d, %s: manifest checksum %s, the disk was %s", i, d.Name, d.Checksum, points[i][d.Name])
			}
		}
	}

	// Each point restores to the disk as it was.
	for i, b := range backups {
		out := filepath.Join(t.TempDir(), "restore")
		format := "qcow2"
		if i == 1 {
			format = "raw"
		}
		r := vb(t, open, "restore", "--from", dir, "--at", b.Name(), "--to", out, "--format", format)
		wantCode(t, r, ExitOK)
		wantStderr(t, r, "restore completed: ")
		for _, disk := range []string{"vda", "vdb"} {
			image := filepath.Join(out, disk+"."+format)
			if got := imageSum(t, image, format); got != points[i][disk] {
				t.Errorf("restore at %s: %s is %s, the disk was %s", b.Name(), disk, got, points[i][disk])
			}
			if format == "qcow2" {
				if info := testbed.Run(t, "qemu-img", "info", image); strings.Contains(info, "backing file") {
					t.Errorf("the restored %s depends on a backing file:\n%s", image, info)
				}
			}
		}
	}

	r = vb(t, open, "verify", "--from", dir)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "All 6 disk images of 3 backups match their manifests.")

	var listed []map[string]any
	r = vb(t, open, "backups", dir, "--json")
	wantCode(t, r, ExitOK)
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("backups --json line %q: %v", line, err)
		}
		listed = append(listed, l)
	}
	if len(listed) != 3 || listed[0]["level"] != "full" || listed[2]["backup"] != backups[2].Name() {
		t.Errorf("backups --json = %v", listed)
	}
	r = vb(t, open, "backups", dir)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 4 || !strings.Contains(lines[2], "vda inc 1.000 MiB") {
		t.Errorf("backups:\n%s", r.stdout)
	}

	// One flipped byte in the first overlay's data: verify names that backup,
	// and the one built on it; a restore through it refuses to pass it off.
	overlay := backups[1].File(chain.Disk{File: "vda.qcow2"})
	flipByte(t, overlay)
	r = vb(t, open, "verify", "--from", dir)
	wantCode(t, r, ExitFailure)
	status := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		f := strings.Fields(line)
		status[f[0]+" "+f[1]] = strings.Join(f[2:], " ")
	}
	for key, want := range map[string]string{
		backups[0].Name() + " vda": "ok " + backups[0].Disks[0].Checksum,
		backups[1].Name() + " vda": "damaged content is sha256-1m:",
		backups[1].Name() + " vdb": "ok",
		backups[2].Name() + " vda": "depends builds on damaged backup " + backups[1].Name(),
	} {
		if !strings.HasPrefix(status[key], want) {
			t.Errorf("verify says %s: %q, want %q…\n%s", key, status[key], want, r.stdout)
		}
	}
	wantStderr(t, r, "2 of 6 disk images", backups[1].Name()+" (vda: damaged)")
	out := filepath.Join(t.TempDir(), "restore")
	r = vb(t, open, "restore", "--from", dir, "--to", out)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "the chain is damaged")
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("a failed restore left %v", entries)
	}
}

// flipByte inverts the first byte of an image's first data cluster.
func flipByte(t *testing.T, image string) {
	t.Helper()
	var extents []struct {
		Offset int64
		Depth  int
		Data   bool
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "map", "-U", "--output=json", "-f", "qcow2", image)), &extents); err != nil {
		t.Fatal(err)
	}
	for _, e := range extents {
		if e.Data && e.Depth == 0 {
			f, err := os.OpenFile(image, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, e.Offset)
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, e.Offset); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("%s holds no data to damage", image)
}
