package commands

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vbackup/chain"
	"vbackup/internal/testbed"
)

// instantDomain removes, with t, a domain an instant restore defined.
func instantDomain(t *testing.T, bed *testbed.Bed, name string) {
	t.Cleanup(func() {
		_, _ = bed.TryVirsh("destroy", name)
		if _, err := bed.TryVirsh("undefine", name, "--nvram"); err != nil {
			_, _ = bed.TryVirsh("undefine", name, "--keep-nvram")
		}
	})
}

// overlaySums is sourceSums for a domain on overlays in folder out.
func overlaySums(t *testing.T, bed *testbed.Bed, dom, out string, disks ...string) map[string]string {
	t.Helper()
	bed.Virsh(t, "suspend", dom)
	defer bed.Virsh(t, "resume", dom)
	sums := map[string]string{}
	for _, d := range disks {
		sums[d] = imageSum(t, filepath.Join(out, d+".qcow2"), "qcow2")
	}
	return sums
}

// hasACL reports whether path carries an access ACL.
func hasACL(t *testing.T, path string) bool {
	t.Helper()
	_, err := unix.Getxattr(path, "system.posix_acl_access", make([]byte, 1024))
	if errors.Is(err, unix.ENODATA) {
		return false
	}
	if err != nil {
		t.Fatalf("getxattr %s: %v", path, err)
	}
	return true
}

// The proof of instant recovery: a domain runs on overlays of a
// two-point chain, reading the point's data, writing to its own folder;
// the backups verify all along, prune keeps the chain it reads and says
// why, 'backups' shows it in use; --finish copies the data in while it
// runs, after which it reads nothing from the folder, which is as it was.
func TestInstantRestoreFinish(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	dir := filepath.Join(bed.Folder(t), "backups")
	bed.Write(t, dom, "vda", 0x11, 0, 4<<20)
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	bed.Write(t, dom, "vda", 0x12, 2<<20, 4<<20)
	bed.Write(t, dom, "vdb", 0x13, 1<<20, 1<<20)
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	point := sourceSums(t, bed, dom, "vda", "vdb")
	names := []string{}
	for _, b := range storeBackups(t, dir) {
		names = append(names, b.Name())
	}
	out := filepath.Join(bed.Folder(t), "instant")
	name := dom + "-i"
	instantDomain(t, bed, name)

	r := vb(t, open, "restore", "--from", dir, "--instant", "--to", out, "--define", name, "--start")
	wantCode(t, r, ExitOK)
	for _, want := range []string{"Instant restore of backup " + names[1], "thin overlay on " + dir, "defined and started", "keeps backup " + names[1]} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	wantStderr(t, r, "read access", "ACL")
	if st := strings.TrimSpace(bed.Virsh(t, "domstate", name)); st != "running" {
		t.Fatalf("the instant restore is %q, want running", st)
	}
	for _, disk := range []string{"vda", "vdb"} {
		info := testbed.Run(t, "qemu-img", "info", "-U", filepath.Join(out, disk+".qcow2"))
		if !strings.Contains(info, "backing file: "+filepath.Join(dir, names[1], disk+".qcow2")) || !strings.Contains(info, "backing file format: qcow2") {
			t.Errorf("overlay of %s:\n%s", disk, info)
		}
	}
	// The domain reads the point.
	got := overlaySums(t, bed, name, out, "vda", "vdb")
	if got["vda"] != point["vda"] || got["vdb"] != point["vdb"] {
		t.Errorf("the instant restore reads %v, want the point's %v", got, point)
	}
	bed.Write(t, name, "vda", 0x77, 40<<20, 1<<20)
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)

	r = vb(t, open, "backups", dir)
	wantCode(t, r, ExitOK)
	if strings.Count(r.stdout, "in use by "+name) != 2 {
		t.Errorf("backups does not show both points of the chain in use by %s:\n%s", name, r.stdout)
	}
	r = vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, r, ExitOK)
	if len(storeBackups(t, dir)) != 2 || !strings.Contains(r.stdout, "in use: domain "+name+" runs from it") {
		t.Fatalf("prune did not keep the chain the domain reads:\n%s", r.stdout)
	}

	// Bad input changes nothing.
	r = vb(t, open, "restore", "--from", dir, "--instant", "--to", filepath.Join(bed.Folder(t), "x"))
	wantCode(t, r, ExitUsage)
	wantStderr(t, r, "--instant", "--define NAME")
	taken := filepath.Join(bed.Folder(t), "taken")
	r = vb(t, open, "restore", "--from", dir, "--instant", "--to", taken, "--define", dom)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--define "+dom+": a domain of that name exists already")
	if _, err := os.Stat(taken); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused instant restore made %s", taken)
	}
	r = vb(t, open, "restore", "--finish", dom)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "domain "+dom+" is not an instant restore")

	// A second instant restore of the folder, defined only: it shares
	// the first one's read access, which must outlive the first's finish.
	out2, name2 := filepath.Join(bed.Folder(t), "instant2"), dom+"-j"
	instantDomain(t, bed, name2)
	wantCode(t, vb(t, open, "restore", "--from", dir, "--instant", "--to", out2, "--define", name2), ExitOK)

	r = vb(t, open, "restore", "--finish", name)
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "reads nothing from "+dir) || !strings.Contains(r.stderr, "finish completed") {
		t.Errorf("--finish:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if live := bed.Virsh(t, "dumpxml", name); strings.Contains(live, "<source file='"+dir) {
		t.Errorf("after --finish the live definition still names %s:\n%s", dir, live)
	}
	if st := strings.TrimSpace(bed.Virsh(t, "domstate", name)); st != "running" {
		t.Fatalf("after --finish the domain is %q, want running", st)
	}
	// What the domain wrote stays, and the point's data is its own now.
	bed.Virsh(t, "suspend", name)
	for _, disk := range []string{"vda", "vdb"} {
		info := testbed.Run(t, "qemu-img", "info", "-U", filepath.Join(out, disk+".qcow2"))
		if strings.Contains(info, "backing file") {
			t.Errorf("overlay of %s still has a backing file:\n%s", disk, info)
		}
	}
	bed.Virsh(t, "resume", name)
	if got := overlaySums(t, bed, name, out, "vdb"); got["vdb"] != point["vdb"] {
		t.Errorf("after --finish vdb reads %s, want the point's %s", got["vdb"], point["vdb"])
	}
	if !hasACL(t, filepath.Join(dir, names[1], "vda.qcow2")) {
		t.Fatal("the first --finish took back the read access the second instant restore needs")
	}
	// The second, shut off, is finished offline.
	r = vb(t, open, "restore", "--finish", name2)
	wantCode(t, r, ExitOK)
	if info := testbed.Run(t, "qemu-img", "info", filepath.Join(out2, "vda.qcow2")); strings.Contains(info, "backing file") {
		t.Errorf("the offline finish left a backing file:\n%s", info)
	}
	if recs, err := chain.ReadInUse(dir); err != nil || len(recs) != 0 {
		t.Errorf("records left after --finish: %v, %v", recs, err)
	}
	for _, p := range []string{dir, filepath.Join(dir, names[0]), filepath.Join(dir, names[1], "vda.qcow2")} {
		if hasACL(t, p) {
			t.Errorf("%s still carries an ACL after --finish", p)
		}
	}
	wantCode(t, vb(t, open, "verify", "--from", dir), ExitOK)
	r = vb(t, open, "backups", dir)
	if strings.Contains(r.stdout, "in use") {
		t.Errorf("backups still shows a point in use after --finish:\n%s", r.stdout)
	}
	r = vb(t, open, "prune", "--from", dir, "--keep-last", "1")
	wantCode(t, r, ExitOK)
	if len(storeBackups(t, dir)) != 1 {
		t.Errorf("after --finish prune kept more than the policy:\n%s", r.stdout)
	}
}
