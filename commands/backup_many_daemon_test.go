package commands

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

// Two real domains and a name that does not exist, two at a time: the
// missing one fails in the table and the exit status, the others are
// backed up each into its folder, where verify passes and the checksums
// are the disks'; the next run is incremental for both.
func TestBackupManyDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	d1 := bed.Domain(t, "vda:qcow2:64M")
	d2 := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	bed.Write(t, d1, "vda", 0x11, 0, 4<<20)
	bed.Write(t, d2, "vda", 0x22, 8<<20, 4<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	r := vb(t, open, "backup", d1, "nosuch-domain", d2, "--to", dir, "--parallel", "2")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "error: 1 of 3 domains failed: nosuch-domain", d1+": Backup vbackup-", d2+": Backup vbackup-")
	rows := regexp.MustCompile(`(?m)^(\S+) +(full|incremental|-) +(\S+ ?\S*B|-) +\S+ +(ok|failed: .*)$`).FindAllStringSubmatch(r.stdout, -1)
	if len(rows) != 3 || !strings.HasPrefix(r.stdout, "DOMAIN ") ||
		rows[0][1] != d1 || rows[0][4] != "ok" || rows[0][2] != "full" ||
		rows[1][1] != "nosuch-domain" || !strings.Contains(rows[1][4], `failed: domain "nosuch-domain" not found`) ||
		rows[2][1] != d2 || rows[2][4] != "ok" {
		t.Fatalf("the table:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	for dom, disks := range map[string][]string{d1: {"vda"}, d2: {"vda", "vdb"}} {
		sums := sourceSums(t, bed, dom, disks...)
		v := vb(t, open, "verify", "--from", filepath.Join(dir, dom))
		wantCode(t, v, ExitOK)
		b := storeBackups(t, filepath.Join(dir, dom))
		if len(b) != 1 {
			t.Fatalf("%s: %d backups", dom, len(b))
		}
		for _, d := range b[0].Disks {
			if d.Checksum != sums[d.Name] {
				t.Errorf("%s %s: backup %s, disk %s", dom, d.Name, d.Checksum, sums[d.Name])
			}
		}
	}

	bed.Write(t, d1, "vda", 0x33, 16<<20, 1<<20)
	r = vb(t, open, "backup", d1, d2, "--to", dir, "--parallel", "2")
	wantCode(t, r, ExitOK)
	for _, dom := range []string{d1, d2} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(dom) + ` +incremental +.* ok$`).MatchString(r.stdout) {
			t.Errorf("%s is not incremental and ok:\n%s", dom, r.stdout)
		}
		if got := backupLevels(t, filepath.Join(dir, dom)); len(got) != 2 {
			t.Errorf("%s: %v", dom, got)
		}
	}
}

// --all on a daemon of the test's own: every domain but the excluded one,
// the running one and the shut-off one (from its image) both backed up,
// each restored equal to its disk; --json prints only one object per
// domain.
func TestBackupManyAllDaemon(t *testing.T) {
	bed := testbed.Own(t)
	openOwn := func(ctx context.Context, _ string, debug io.Writer) (virt.Conn, error) {
		return libvirtconn.Open(ctx, bed.URI(), libvirtconn.Options{Debug: debug})
	}
	a := bed.Domain(t, "vda:qcow2:64M")
	skip := bed.Domain(t, "vda:qcow2:64M")
	off := bed.Domain(t, "vda:qcow2:64M")
	bed.Virsh(t, "destroy", off)
	offlineWrite(t, bed, off, "vda", "qcow2", 0x45, 8<<20, 3<<20)
	bed.Write(t, a, "vda", 0x44, 0, 2<<20)
	dir := filepath.Join(t.TempDir(), "backups")
	r := vb(t, openOwn, "backup", "--all", "--exclude", skip, "--to", dir, "--json")
	wantCode(t, r, ExitOK)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var j jsonDomain
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			t.Fatalf("stdout line %q: %v\nstdout:\n%s", line, err, r.stdout)
		}
		got = append(got, j.Domain+"="+j.Result)
		if j.Result != "ok" || j.Bytes < 2<<20 || j.Level != "full" || j.Dir != filepath.Join(dir, j.Domain) {
			t.Errorf("%q", line)
		}
	}
	want := []string{a + "=ok", off + "=ok"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v\nstderr:\n%s", got, want, r.stderr)
	}
	sums := map[string]string{a: sourceSums(t, bed, a, "vda")["vda"], off: imageSum(t, bed.DiskPath(off, "vda"), "qcow2")}
	for dom, sum := range sums {
		wantCode(t, vb(t, openOwn, "verify", "--from", filepath.Join(dir, dom)), ExitOK)
		out := filepath.Join(t.TempDir(), "restored")
		wantCode(t, vb(t, openOwn, "restore", "--from", filepath.Join(dir, dom), "--to", out), ExitOK)
		if got := imageSum(t, filepath.Join(out, "vda.qcow2"), "qcow2"); got != sum {
			t.Errorf("%s: restored %s, its disk %s", dom, got, sum)
		}
	}
}
