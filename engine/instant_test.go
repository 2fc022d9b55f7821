package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/internal/testbed"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

const vm1XML = `<domain type='qemu'><name>vm1</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><memory>65536</memory>` +
	`<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>` +
	`<source file='/var/lib/vm1/vda.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>`

// An instant restore given a relative --from makes overlays whose backing
// file is the backup image's absolute path, records the whole chain, and
// refuses a second domain of the same name; --finish ends it.
func TestInstantRestoreRelativeFrom(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 8}, {day: "2026-10-29", off: 4, size: 4}})
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range store.Backups {
		m := b.Manifest
		m.Domain.XML = vm1XML
		if err := store.Rewrite(b, m); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Dir(dir))
	conn := virtfake.New()
	out := filepath.Join(t.TempDir(), "instant")
	req := InstantRequest{From: filepath.Base(dir), To: out, Define: "vm1-now", Start: true, Conn: conn, Now: time.Now}
	res, err := InstantRestore(context.Background(), req, &lines{})
	if err != nil {
		t.Fatal(err)
	}
	backing, err := backingFile(filepath.Join(out, "vda.qcow2"))
	if err != nil || backing != filepath.Join(dir, names[1], "vda.qcow2") {
		t.Fatalf("the overlay's backing file is %q (%v), want the absolute %s", backing, err, filepath.Join(dir, names[1], "vda.qcow2"))
	}
	if !res.Started {
		t.Error("not started")
	}
	rec, ok, err := chain.FindInUse(dir, "vm1-now")
	if err != nil || !ok || strings.Join(rec.Chain, " ") != strings.Join(names, " ") || rec.UUID == "" {
		t.Fatalf("record %+v, %v, %v", rec, ok, err)
	}

	// The same name again: refused, nothing made.
	again := filepath.Join(t.TempDir(), "again")
	if _, err := InstantRestore(context.Background(), InstantRequest{From: dir, To: again, Define: "vm1-now", Conn: conn, Now: time.Now}, &lines{}); err == nil ||
		!strings.Contains(err.Error(), "exists already") {
		t.Fatalf("a second vm1-now: %v", err)
	}
	if _, err := os.Stat(again); !os.IsNotExist(err) {
		t.Errorf("a refused instant restore made %s", again)
	}

	if _, err := Finish(context.Background(), FinishRequest{Domain: "vm1-now", Conn: conn, Now: time.Now, Every: time.Millisecond}, progress.NewQuiet(), &lines{}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := chain.FindInUse(dir, "vm1-now"); ok {
		t.Fatal("the record outlived --finish")
	}
}

// vm1Chain is a folder of one backup of vm1, its definition vm1XML.
func vm1Chain(t *testing.T) string {
	t.Helper()
	dir, _ := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 8}})
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := store.Backups[0].Manifest
	m.Domain.XML = vm1XML
	if err := store.Rewrite(store.Backups[0], m); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Under libvirt's DAC driver an instant restore's disks carry
// relabel='no', so that starting the domain does not chown the backups
// below them to QEMU's user; without it (a session daemon) they do not,
// which libvirt would refuse.
func TestInstantRestoreKeepsBackupOwners(t *testing.T) {
	dir := vm1Chain(t)
	for _, models := range [][]virt.SecurityModel{{{Name: "selinux"}, {Name: "dac"}}, nil} {
		conn := virtfake.New()
		if models != nil {
			conn.SetSecurityModels(models...)
		}
		req := InstantRequest{From: dir, To: filepath.Join(t.TempDir(), "instant"), Define: "vm1-now", Conn: conn, Now: time.Now}
		if _, err := InstantRestore(context.Background(), req, &lines{}); err != nil {
			t.Fatal(err)
		}
		dom, err := conn.Domain(context.Background(), "vm1-now")
		if err != nil {
			t.Fatal(err)
		}
		doc, err := dom.XML(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Contains(doc, `relabel="no"`) || strings.Contains(doc, `relabel='no'`), models != nil; got != want {
			t.Errorf("security models %v: relabel='no' in the definition is %v, want %v:\n%s", models, got, want, doc)
		}
		if _, err := Finish(context.Background(), FinishRequest{Domain: "vm1-now", Conn: conn, Now: time.Now, Every: time.Millisecond}, progress.NewQuiet(), &lines{}); err != nil {
			t.Fatal(err)
		}
	}
}

// Under a system daemon's DAC driver QEMU runs as the host's base label
// (libvirt-qemu), not as whoever owns OUTDIR: the overlays are that
// account's and the backups are opened to it alone. Taking OUTDIR's owner
// would give a user's --to /home/alice/x read access to the backups, and
// QEMU none.
func TestInstantRestoreOpensToQEMUsDACAccount(t *testing.T) {
	testbed.NeedRoot(t, "giving overlays and read access to another user")
	dir := vm1Chain(t)
	// t.TempDir's folders are 0700; QEMU's user must pass through them.
	for p := filepath.Dir(dir); p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const qemuUID = 54321
	conn := virtfake.New()
	conn.SetSecurityModels(virt.SecurityModel{Name: "dac", BaseLabels: map[string]string{"kvm": "+1:+1", "qemu": fmt.Sprintf("+%d:+%d", qemuUID, qemuUID)}})
	to := filepath.Join(t.TempDir(), "instant") // made by root, as root's
	out, err := InstantRestore(context.Background(), InstantRequest{From: dir, To: to, Define: "vm1-now", Conn: conn, Now: time.Now}, &lines{})
	if err != nil {
		t.Fatal(err)
	}
	if out.QEMUUser != strconv.Itoa(qemuUID) {
		t.Errorf("QEMU's user is %q, want %d (the DAC base label of a qemu domain)", out.QEMUUser, qemuUID)
	}
	for _, d := range out.Disks {
		fi, err := os.Stat(d.Overlay)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != qemuUID {
			t.Errorf("overlay %s belongs to uid %d, want %d", d.Overlay, uid, qemuUID)
		}
	}
	if len(out.Grants) == 0 {
		t.Fatal("no read access was given to QEMU's user")
	}
	for _, g := range out.Grants {
		if g.UID != qemuUID {
			t.Errorf("grant %+v is for uid %d, want %d", g, g.UID, qemuUID)
		}
	}
	if _, err := Finish(context.Background(), FinishRequest{Domain: "vm1-now", Conn: conn, Now: time.Now, Every: time.Millisecond}, progress.NewQuiet(), &lines{}); err != nil {
		t.Fatal(err)
	}
}

func TestDACAccount(t *testing.T) {
	for label, want := range map[string]int{"+64055:+994": 64055, "0:0": 0, "root:root": 0} {
		a, err := dacAccount(label)
		if err != nil || a.uid != want {
			t.Errorf("dacAccount(%q) = uid %d, %v; want %d", label, a.uid, err, want)
		}
	}
	for _, bad := range []string{"64055", "+x:+1", "no-such-user-here:root"} {
		if _, err := dacAccount(bad); err == nil {
			t.Errorf("dacAccount(%q) gave no error", bad)
		}
	}
}
