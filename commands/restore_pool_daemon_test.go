package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

var poolSeq atomic.Int64

// testPool defines a directory pool on the bed, in a folder of its own,
// started when active; t's cleanup removes it and its volumes.
func testPool(t *testing.T, bed *testbed.Bed, active bool) (name, dir string) {
	t.Helper()
	name = fmt.Sprintf("vbpool-%d-%d", os.Getpid(), poolSeq.Add(1))
	dir = bed.Folder(t)
	bed.Virsh(t, "pool-define-as", name, "dir", "--target", dir)
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("pool-destroy", name)
		_, _ = bed.TryVirsh("pool-undefine", name)
	})
	if active {
		bed.Virsh(t, "pool-start", name)
	}
	return name, dir
}

func volumes(t *testing.T, bed *testbed.Bed, pool string) string {
	t.Helper()
	bed.Virsh(t, "pool-refresh", pool)
	return bed.Virsh(t, "vol-list", pool)
}

// restore --define NAME --pool POOL: each disk becomes a volume of the
// pool, uploaded over the libvirt connection, holding the disk at the
// backup point (qemu-img compare against the backup's image, after the
// disk has changed since); the domain is defined on those volumes. Raw
// images travel sparse: a 16 MiB disk holding 2 MiB takes about 2 MiB in
// the pool.
func TestRestorePoolDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	staging := stagingNow()
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	bed.Write(t, dom, "vda", 0x71, 4<<20, 3<<20)
	bed.Write(t, dom, "vdb", 0x72, 1<<20, 2<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	bed.Write(t, dom, "vda", 0x73, 0, 1<<20) // after the backup point
	b := storeBackups(t, dir)[0]
	pool, pooldir := testPool(t, bed, true)

	name := dom + "-p"
	t.Cleanup(func() { _, _ = bed.TryVirsh("undefine", name) })
	r := vb(t, open, "restore", "--from", dir, "--define", name, "--pool", pool)
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "Domain "+name+" defined on the restored images (not started)")
	vols := volumes(t, bed, pool)
	blk := bed.Virsh(t, "domblklist", name)
	for _, disk := range []string{"vda", "vdb"} {
		vol := name + "-" + disk + ".qcow2"
		if !strings.Contains(vols, vol) {
			t.Fatalf("pool %s lacks volume %s:\n%s", pool, vol, vols)
		}
		path := strings.TrimSpace(bed.Virsh(t, "vol-path", vol, "--pool", pool))
		if path != filepath.Join(pooldir, vol) {
			t.Errorf("volume %s is at %s, want it in the pool's folder %s", vol, path, pooldir)
		}
		if !strings.Contains(blk, path) {
			t.Errorf("domblklist %s lacks %s:\n%s", name, path, blk)
		}
		if !strings.Contains(r.stdout+r.stderr, "volume "+vol+" of pool "+pool) {
			t.Errorf("the output does not say where %s went:\n%s%s", disk, r.stdout, r.stderr)
		}
		md, _ := b.Disk(disk)
		testbed.Run(t, "qemu-img", "compare", "-U", b.File(md), path)
	}
	if !strings.Contains(bed.Virsh(t, "dumpxml", name), "<driver name='qemu' type='qcow2'/>") {
		t.Errorf("the restored domain's disks are not qcow2:\n%s", bed.Virsh(t, "dumpxml", name))
	}
	if left := stagingLeft(staging); len(left) > 0 {
		t.Errorf("staging folders left behind: %v", left)
	}

	// Raw: sent sparse, the volume allocates what the disk holds.
	raw := dom + "-raw"
	t.Cleanup(func() { _, _ = bed.TryVirsh("undefine", raw) })
	wantCode(t, vb(t, open, "restore", "--from", dir, "--define", raw, "--pool", pool, "--format", "raw", "--disk", "vdb"), ExitOK)
	path := filepath.Join(pooldir, raw+"-vdb.raw")
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 16<<20 || st.Blocks*512 > 4<<20 {
		t.Errorf("the raw volume %s: %d bytes, %d allocated; want 16 MiB holding about 2 MiB", path, st.Size, st.Blocks*512)
	}
	md, _ := b.Disk("vdb")
	testbed.Run(t, "qemu-img", "compare", "-U", b.File(md), path)

	// --bwlimit caps the upload: the data sent (the volume's allocation)
	// takes at least what 1 MiB/s allows, less the bucket's burst and one
	// part of 1 MiB sent at once.
	capped := dom + "-cap"
	t.Cleanup(func() { _, _ = bed.TryVirsh("undefine", capped) })
	start := time.Now()
	wantCode(t, vb(t, open, "restore", "--from", dir, "--define", capped, "--pool", pool, "--disk", "vda", "--bwlimit", "1M"), ExitOK)
	wall := time.Since(start)
	path = filepath.Join(pooldir, capped+"-vda.qcow2")
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	sent := float64(st.Blocks * 512)
	least := time.Duration((sent - 256<<10 - 1<<20) / (1 << 20) * float64(time.Second))
	t.Logf("uploaded %.2f MiB in %v at --bwlimit 1M (at least %v)", sent/(1<<20), wall, least)
	if wall < least {
		t.Errorf("the capped restore of %.2f MiB took %v; at 1 MiB/s the upload takes at least %v", sent/(1<<20), wall, least)
	}
	md, _ = b.Disk("vda")
	testbed.Run(t, "qemu-img", "compare", "-U", b.File(md), path)
}

// Each refusal of a restore into a pool says what was wrong and what
// would be right, and writes nothing: no volume, no domain.
func TestRestorePoolRefusalsDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	dir := filepath.Join(t.TempDir(), "backups")
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	pool, pooldir := testPool(t, bed, true)
	off, _ := testPool(t, bed, false)
	name := dom + "-x"
	t.Cleanup(func() { _, _ = bed.TryVirsh("undefine", name) })
	nothingDefined := func() {
		t.Helper()
		if _, err := bed.TryVirsh("dominfo", name); err == nil {
			t.Errorf("a refused restore defined %s", name)
		}
	}

	r := vb(t, open, "restore", "--from", dir, "--define", name, "--pool", "no-such-pool")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "no storage pool no-such-pool on ", "its storage pools are ", pool, off)
	nothingDefined()

	r = vb(t, open, "restore", "--from", dir, "--define", name, "--pool", off)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "storage pool "+off+" of ", "is not active: start it (virsh pool-start "+off+")")
	nothingDefined()

	// A volume of the name taken: nothing is overwritten, nothing made.
	bed.Virsh(t, "vol-create-as", pool, name+"-vdb.qcow2", "1M", "--format", "raw")
	before, err := os.ReadFile(filepath.Join(pooldir, name+"-vdb.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	r = vb(t, open, "restore", "--from", dir, "--define", name, "--pool", pool)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "pool "+pool+" has a volume "+name+"-vdb.qcow2 already; vbackup never writes over one")
	nothingDefined()
	if after, _ := os.ReadFile(filepath.Join(pooldir, name+"-vdb.qcow2")); string(after) != string(before) {
		t.Error("a refused restore changed the volume in the way")
	}
	if vols := volumes(t, bed, pool); strings.Contains(vols, name+"-vda.qcow2") {
		t.Errorf("a refused restore made a volume:\n%s", vols)
	}

	r = vb(t, open, "restore", "--from", dir, "--pool", pool)
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, "--pool defines a domain on the volumes it writes: name it with --define NAME")
}

// stagingNow lists the staging folders of restores into a pool here.
func stagingNow() []string {
	entries, _ := filepath.Glob(filepath.Join(os.TempDir(), "vbackup-restore-*"))
	return entries
}

// stagingLeft is the staging folders made since before (a leftover of an
// earlier run that was killed is not this test's).
func stagingLeft(before []string) []string {
	var left []string
	for _, e := range stagingNow() {
		if !slices.Contains(before, e) {
			left = append(left, e)
		}
	}
	return left
}
