package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// These restore a backup of a second host's domain (testbed.GetRemote)
// back onto that host, into a storage pool there, over the libvirt
// connection: what was written and defined is read on the host through
// SSH, never from a local path.

// rvirsh runs virsh on the remote host and returns what it printed; t
// fails if it fails.
func rvirsh(t *testing.T, host *testbed.Remote, args ...string) string {
	t.Helper()
	return host.SSH(t, remoteVirshLine(args...))
}

// rvirshOK tells whether virsh on the remote host succeeds.
func rvirshOK(t *testing.T, host *testbed.Remote, args ...string) bool {
	t.Helper()
	return strings.TrimSpace(host.SSH(t, remoteVirshLine(args...)+" >/dev/null 2>&1 && echo yes || echo no")) == "yes"
}

func remoteVirshLine(args ...string) string {
	line := "virsh -q -c qemu:///session"
	for _, a := range args {
		line += " '" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return line
}

// remotePool defines and starts a directory pool on the host, in a folder
// of its own there; t's cleanup removes it, its volumes and its folder.
func remotePool(t *testing.T, host *testbed.Remote) (name, dir string) {
	t.Helper()
	name = fmt.Sprintf("vbrpool-%d-%d", os.Getpid(), poolSeq.Add(1))
	dir = "/home/" + host.User() + "/pools/" + name
	host.SSH(t, "mkdir -p "+dir)
	t.Cleanup(func() {
		line := remoteVirshLine("pool-destroy", name) + " >/dev/null 2>&1; " +
			remoteVirshLine("pool-undefine", name) + " >/dev/null 2>&1; rm -rf " + dir
		host.SSH(t, line)
	})
	rvirsh(t, host, "pool-define-as", name, "dir", "--target", dir)
	rvirsh(t, host, "pool-start", name)
	return name, dir
}

// remoteVolumes lists the names of the remote pool's volumes.
func remoteVolumes(t *testing.T, host *testbed.Remote, pool string) []string {
	t.Helper()
	rvirsh(t, host, "pool-refresh", pool)
	var names []string
	for _, l := range strings.Split(rvirsh(t, host, "vol-list", pool), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// remoteImageSum is the SHA-256 of the raw content of a qcow2 image on the
// host, converted and hashed there.
func remoteImageSum(t *testing.T, host *testbed.Remote, path string) string {
	t.Helper()
	raw := fmt.Sprintf("/tmp/vbrvol-%d-%d.raw", os.Getpid(), poolSeq.Add(1))
	out := host.SSH(t, fmt.Sprintf("qemu-img convert -U -f qcow2 -O raw '%s' %s && sha256sum %s; rc=$?; rm -f %s; exit $rc", path, raw, raw, raw))
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("no checksum of %s on the remote host", path)
	}
	return f[0]
}

// undefineRemote removes a restored domain from the host when t ends.
func undefineRemote(t *testing.T, host *testbed.Remote, name string) {
	t.Cleanup(func() {
		host.SSH(t, remoteVirshLine("destroy", name)+" >/dev/null 2>&1; "+remoteVirshLine("undefine", name)+" >/dev/null 2>&1; true")
	})
}

// A remote domain backed up from here (full, a write, incremental) is
// restored onto its host at each point, --define NAME --pool POOL: each
// disk becomes a volume of the host's pool holding the disk as it was at
// that point, the domain is defined there on those volumes, and it starts.
func TestRemoteRestorePool(t *testing.T) {
	host := testbed.GetRemote(t)
	staging := stagingNow()
	dom := host.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	host.Write(t, dom, "vda", 0x31, 0, 4<<20)
	host.Write(t, dom, "vdb", 0x32, 1<<20, 2<<20)
	dir := filepath.Join(t.TempDir(), dom)
	disks := []string{"vda", "vdb"}
	sums := func() map[string]string {
		return map[string]string{"vda": host.DiskSum(t, dom, "vda"), "vdb": host.DiskSum(t, dom, "vdb")}
	}

	wantCode(t, vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir, "--quiesce", "no"), ExitOK)
	atFull := sums()
	host.Write(t, dom, "vda", 0xcd, 8<<20, 512<<10)
	wantCode(t, vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir, "--quiesce", "no"), ExitOK)
	atLatest := sums()
	if atLatest["vda"] == atFull["vda"] {
		t.Fatal("the write between the backups changed nothing on the remote disk")
	}
	bs := storeBackups(t, dir)
	if len(bs) != 2 {
		t.Fatalf("%d backups in %s, want a full and an incremental", len(bs), dir)
	}
	pool, pooldir := remotePool(t, host)

	for _, tc := range []struct {
		at   string
		want map[string]string
	}{
		{bs[0].Name(), atFull},
		{"latest", atLatest},
	} {
		t.Run(tc.at, func(t *testing.T) {
			name := fmt.Sprintf("%s-at%d", dom, poolSeq.Add(1))
			undefineRemote(t, host, name)
			r := vb(t, remoteOpen, "-c", host.URI(), "restore", "--from", dir, "--at", tc.at, "--define", name, "--pool", pool)
			wantCode(t, r, ExitOK)
			wantSaid(t, r, "Uploading the images into pool "+pool+" of qemu+ssh://", "Domain "+name+" defined on the restored images (not started)")

			vols := remoteVolumes(t, host, pool)
			blk := map[string]string{}
			for _, l := range strings.Split(rvirsh(t, host, "domblklist", name), "\n") {
				if f := strings.Fields(l); len(f) == 2 {
					blk[f[0]] = f[1]
				}
			}
			for _, d := range disks {
				vol := name + "-" + d + ".qcow2"
				if !slices.Contains(vols, vol) {
					t.Fatalf("remote pool %s lacks volume %s: %v", pool, vol, vols)
				}
				path := strings.TrimSpace(rvirsh(t, host, "vol-path", vol, "--pool", pool))
				if path != pooldir+"/"+vol {
					t.Errorf("volume %s is at %s, want it in the pool's folder %s", vol, path, pooldir)
				}
				if blk[d] != path {
					t.Errorf("domblklist %s on the remote host: %s is on %q, want %s", name, d, blk[d], path)
				}
				wantSaid(t, r, "volume "+vol+" of pool "+pool+": "+path)
				if _, err := os.Stat(path); err == nil {
					t.Fatalf("the remote volume %s is visible here: the host is not separate", path)
				}
				if got := remoteImageSum(t, host, path); got != tc.want[d] {
					t.Errorf("--at %s: volume %s reads %s on the remote host, the disk read %s at that point", tc.at, vol, got, tc.want[d])
				}
			}
			if xml := rvirsh(t, host, "dumpxml", name); strings.Count(xml, "<driver name='qemu' type='qcow2'/>") != len(disks) {
				t.Errorf("the restored domain's disks are not all qcow2:\n%s", xml)
			}
			rvirsh(t, host, "start", name)
			if st := strings.TrimSpace(rvirsh(t, host, "domstate", name)); st != "running" {
				t.Errorf("the restored domain %s is %q on the remote host after start, want running", name, st)
			}
		})
	}
	if left := stagingLeft(staging); len(left) > 0 {
		t.Errorf("staging folders left behind here: %v", left)
	}
}

// A restore onto the remote host that is refused (no such pool there, a
// domain of that name there already) says so, exits 1 and changes nothing
// on the host: no domain defined, no volume made, the domain in the way
// untouched.
func TestRemoteRestorePoolRefusals(t *testing.T) {
	host := testbed.GetRemote(t)
	staging := stagingNow()
	dom := host.Domain(t, "vda:qcow2:64M", "vdb:qcow2:32M")
	dir := filepath.Join(t.TempDir(), dom)
	wantCode(t, vb(t, remoteOpen, "-c", host.URI(), "backup", dom, "--to", dir, "--quiesce", "no"), ExitOK)
	pool, _ := remotePool(t, host)
	before := remoteVolumes(t, host, pool)
	sameVolumes := func() {
		t.Helper()
		if after := remoteVolumes(t, host, pool); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("a refused restore changed the volumes of pool %s: %v, before %v", pool, after, before)
		}
	}

	name := dom + "-nopool"
	undefineRemote(t, host, name)
	r := vb(t, remoteOpen, "-c", host.URI(), "restore", "--from", dir, "--define", name, "--pool", "no-such-pool")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "no storage pool no-such-pool on qemu+ssh://"+host.User()+"@"+host.Addr(), "its storage pools are ", pool)
	if rvirshOK(t, host, "dominfo", name) {
		t.Errorf("a restore into no pool defined %s on the remote host", name)
	}
	sameVolumes()
	for _, p := range strings.Fields(rvirsh(t, host, "pool-list", "--name")) {
		for _, v := range remoteVolumes(t, host, p) {
			if strings.HasPrefix(v, name) {
				t.Errorf("a restore into no pool left volume %s in pool %s of the remote host", v, p)
			}
		}
	}

	// The source domain's own name: it is there, running.
	xml := rvirsh(t, host, "dumpxml", dom)
	r = vb(t, remoteOpen, "-c", host.URI(), "restore", "--from", dir, "--define", dom, "--pool", pool)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--define "+dom+": a domain of that name exists already; choose another name")
	sameVolumes()
	if after := rvirsh(t, host, "dumpxml", dom); after != xml {
		t.Errorf("a refused restore changed the domain %s in the way:\n%s\nbefore:\n%s", dom, after, xml)
	}
	if st := strings.TrimSpace(rvirsh(t, host, "domstate", dom)); st != "running" {
		t.Errorf("the domain in the way is %q after a refused restore, want running", st)
	}

	// Shut off, it is there all the same.
	rvirsh(t, host, "destroy", dom)
	r = vb(t, remoteOpen, "-c", host.URI(), "restore", "--from", dir, "--define", dom, "--pool", pool)
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "--define "+dom+": a domain of that name exists already")
	sameVolumes()
	if st := strings.TrimSpace(rvirsh(t, host, "domstate", dom)); st != "shut off" {
		t.Errorf("the shut-off domain in the way is %q after a refused restore", st)
	}
	if left := stagingLeft(staging); len(left) > 0 {
		t.Errorf("staging folders left behind here: %v", left)
	}
}
