package commands

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// These run the checkpoint commands against a real libvirtd + QEMU (the
// test bed), where bitmaps live in real qcow2 images.

// checkpoint-list must print what virsh checkpoint-list prints for the same
// checkpoints, byte for byte, in every layout admins read.
func TestCheckpointListMatchesVirsh(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	for _, name := range []string{"c1", "c2", "c3"} {
		wantCode(t, vb(t, open, "checkpoint-create-as", dom, name), ExitOK)
	}
	// A branch: b1 hangs off c1, redefined from c2's XML with another name
	// and parent (libvirt keeps metadata as given).
	r := vb(t, open, "checkpoint-dumpxml", dom, "c2", "--no-domain")
	wantCode(t, r, ExitOK)
	doc := strings.Replace(r.stdout, "<name>c2</name>", "<name>b1</name>", 1)
	doc = strings.Replace(doc, "bitmap='c2'", "bitmap='b1'", 1)
	file := filepath.Join(t.TempDir(), "b1.xml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, vb(t, open, "checkpoint-create", dom, file, "--redefine"), ExitOK)

	for _, layout := range [][]string{{}, {"--name"}, {"--tree"}, {"--parent"}, {"--roots"}, {"--leaves"}, {"--no-leaves"},
		{"--from", "c1"}, {"--from", "c1", "--descendants"}, {"--from", "c1", "--tree"}, {"--topological", "--name"}} {
		args := append([]string{"checkpoint-list", dom}, layout...)
		ours := vb(t, open, args...)
		wantCode(t, ours, ExitOK)
		theirs := bed.Virsh(t, args...)
		if ours.stdout != theirs {
			t.Errorf("%v differs from virsh:\nvbackup:\n%q\nvirsh:\n%q", layout, ours.stdout, theirs)
		}
	}
}

func TestCheckpointsRealDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")

	r := vb(t, open, "checkpoint-create-as", dom, "c1", "--description", "before the write")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, "note: disk vdb (raw) cannot carry a bitmap: left out of this checkpoint")

	// A raw disk asked for a bitmap is refused, naming the disk, and nothing is made.
	r = vb(t, open, "checkpoint-create-as", dom, "bad", "--diskspec", "vdb")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, `disk "vdb" is raw`)
	// Only a bitmap-capable disk: libvirt leaves the others out.
	bed.Write(t, dom, "vda", 0xcd, 4<<20, 512<<10)
	wantCode(t, vb(t, open, "checkpoint-create-as", dom, "c2", "--diskspec", "vda"), ExitOK)

	// QEMU holds a persistent bitmap per checkpoint on vda (written into the
	// image when QEMU closes it); c1's has seen the 512 KiB, c2's nothing.
	bitmaps := persistentBitmaps(t, bed, dom)
	if len(bitmaps) != 2 || bitmaps["c1"] != 512<<10 || bitmaps["c2"] != 0 {
		t.Errorf("vda bitmaps %v, want c1: 524288 bytes dirty, c2: 0", bitmaps)
	}

	// --size: c1's bitmap holds the 512 KiB written since it was made.
	r = vb(t, open, "checkpoint-dumpxml", dom, "c1", "--no-domain", "--size")
	wantCode(t, r, ExitOK)
	m := regexp.MustCompile(`<disk name='vda' checkpoint='bitmap' bitmap='c1' size='(\d+)'/>`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no size for vda in:\n%s", r.stdout)
	}
	if size, _ := strconv.Atoi(m[1]); size < 512<<10 || size > 1<<20 {
		t.Errorf("c1 size %d bytes, want about 512 KiB", size)
	}

	r = vb(t, open, "checkpoint-list", dom, "--name")
	if r.stdout != "c1\nc2\n\n" {
		t.Errorf("list: %q", r.stdout)
	}

	// Redefine: drop the metadata, then restore it from the saved XML.
	r = vb(t, open, "checkpoint-dumpxml", dom, "c2")
	saved := filepath.Join(t.TempDir(), "c2.xml")
	if err := os.WriteFile(saved, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, vb(t, open, "checkpoint-delete", dom, "c2", "--metadata"), ExitOK)
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "c1\n\n" {
		t.Errorf("after --metadata delete: %q", r.stdout)
	}
	r = vb(t, open, "checkpoint-create", dom, saved, "--redefine", "--redefine-validate")
	wantCode(t, r, ExitOK)
	if r := vb(t, open, "checkpoint-parent", dom, "c2"); r.stdout != "c1\n" {
		t.Errorf("parent after redefine: %q", r.stdout)
	}

	// Deleting c1 with its children removes both bitmaps from the image.
	r = vb(t, open, "checkpoint-delete", dom, "c1", "--children")
	wantCode(t, r, ExitOK)
	if b := persistentBitmaps(t, bed, dom); len(b) != 0 {
		t.Errorf("bitmaps left after delete --children: %v", b)
	}
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "\n" {
		t.Errorf("after delete --children: %q", r.stdout)
	}
}

func TestDebugLogsLibvirtCalls(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	r := vb(t, open, "checkpoint-list", dom, "--debug")
	wantCode(t, r, ExitOK)
	wantStderr(t, r, `libvirt: virDomainLookupByName("`+dom+`")`, "virDomainListAllCheckpoints")
}

func TestConnectFlag(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	// -c after the arguments, as virsh users type it.
	r := vb(t, open, "checkpoint-list", dom, "--name", "-c", bed.URI())
	wantCode(t, r, ExitOK)
	r = vb(t, open, "checkpoint-list", dom, "-c", "qemu+unix:///session?socket=/nonexistent/sock")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "cannot connect to qemu+unix:///session?socket=/nonexistent/sock", "is libvirtd running there", "-c URI")
}

// persistentBitmaps asks the running QEMU which persistent dirty bitmaps
// vda has, and how many bytes each has seen change.
func persistentBitmaps(t *testing.T, bed *testbed.Bed, dom string) map[string]int64 {
	t.Helper()
	out := bed.Virsh(t, "qemu-monitor-command", dom, `{"execute":"query-block"}`)
	var reply struct {
		Return []struct {
			Device   string `json:"device"`
			Qdev     string `json:"qdev"`
			Inserted struct {
				Bitmaps []struct {
					Name       string `json:"name"`
					Count      int64  `json:"count"`
					Persistent bool   `json:"persistent"`
				} `json:"dirty-bitmaps"`
			} `json:"inserted"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		t.Fatalf("query-block: %v\n%s", err, out)
	}
	got := map[string]int64{}
	for _, dev := range reply.Return {
		if !strings.Contains(dev.Qdev, "virtio-disk0") {
			continue
		}
		for _, b := range dev.Inserted.Bitmaps {
			if b.Persistent {
				got[b.Name] = b.Count
			}
		}
	}
	return got
}

// What the QEMU driver cannot do is said in a sentence with the way out.
func TestCheckpointStateErrorsRealDaemon(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M")
	wantCode(t, vb(t, open, "checkpoint-create-as", dom, "c1"), ExitOK)

	// libvirt 9.0's QEMU driver has no quiesce for checkpoints.
	r := vb(t, open, "checkpoint-create-as", dom, "c2", "--quiesce")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "cannot quiesce", "leave out --quiesce")

	bed.Virsh(t, "destroy", dom)
	for _, args := range [][]string{
		{"checkpoint-create-as", dom, "c3"},
		{"checkpoint-dumpxml", dom, "c1", "--size"},
		{"checkpoint-delete", dom, "c1"},
	} {
		r := vb(t, open, args...)
		wantCode(t, r, ExitFailure)
		wantStderr(t, r, `domain "`+dom+`" is shut off, and this needs it running`, "virsh start "+dom)
	}
	// Listing works on a stopped domain, and nothing above changed anything.
	if r := vb(t, open, "checkpoint-list", dom, "--name"); r.stdout != "c1\n\n" {
		t.Errorf("list: %q %s", r.stdout, r.stderr)
	}
}
