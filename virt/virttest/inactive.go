package virttest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"vbackup/virt"
)

// inactiveDomain asserts what a shut-off domain refuses and allows. The
// suite's own domain keeps running; a copy of it, defined and never
// started, is the shut-off one.
func inactiveDomain(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("InactiveDomain", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		create(t, dom, "a1")
		t.Cleanup(func() { deleteAll(dom) })
		a1, err := dom.CheckpointXML(bg, "a1", virt.XMLFlags{NoDomain: true})
		if err != nil {
			t.Fatal(err)
		}
		off := definedCopy(t, s, dom)
		if st, err := off.State(bg); err != nil || st.Active || st.State != "shut off" {
			t.Fatalf("copy's State = %+v, %v; want shut off", st, err)
		}

		_, err = off.CreateCheckpoint(bg, checkpointXML("o1", ""), virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint on a shut-off domain", err, virt.ErrUnsupported, "cannot create checkpoint for inactive domain")
		_, err = off.CreateCheckpoint(bg, a1, virt.CreateFlags{Redefine: true})
		switch {
		case testDriver(s):
			wantErr(t, "redefine on the test driver's shut-off domain", err, virt.ErrUnsupported)
		case err != nil:
			t.Fatalf("redefine on a shut-off domain: %v; want it to work (the QEMU driver allows it)", err)
		default:
			if cp, err := off.Checkpoint(bg, "a1"); err != nil || cp.Parent != "" || len(cp.Disks) != 2 {
				t.Fatalf("redefined a1 = %+v, %v", cp, err)
			}
			_, err = off.CreateCheckpoint(bg, a1, virt.CreateFlags{Redefine: true, RedefineValidate: true})
			wantErr(t, "RedefineValidate on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
			_, err = off.CheckpointXML(bg, "a1", virt.XMLFlags{Size: true})
			wantErr(t, "CheckpointXML with Size on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
			err = off.DeleteCheckpoint(bg, "a1", virt.DeleteFlags{})
			wantErr(t, "DeleteCheckpoint on a shut-off domain", err, virt.ErrUnsupported, "cannot delete checkpoint for inactive domain")
			if err := off.DeleteCheckpoint(bg, "a1", virt.DeleteFlags{MetadataOnly: true}); err != nil {
				t.Fatalf("DeleteCheckpoint MetadataOnly on a shut-off domain: %v", err)
			}
			assertNames(t, off)
			redefineWithDomain(t, off)
		}

		err = off.BeginBackup(bg, "<domainbackup/>", "", virt.BeginFlags{})
		wantErr(t, "BeginBackup on a shut-off domain", err, virt.ErrUnsupported)
		if s.Folder != nil {
			wantErr(t, "BeginBackup on a shut-off domain", err, virt.ErrUnsupported, "inactive domain")
			_, err = off.Job(bg, false)
			wantErr(t, "Job on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
			wantErr(t, "AbortJob on a shut-off domain", off.AbortJob(bg), virt.ErrOperationInvalid, "domain is not running")
			_, _, err = off.BlockJob(bg, "vda")
			wantErr(t, "BlockJob on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
		}
		// vbackup's record lives in the live metadata: there is none.
		_, _, err = off.BackupRecord(bg)
		wantErr(t, "BackupRecord on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
		err = off.SetBackupRecord(bg, virt.BackupRecord{Checkpoint: "a1", Started: time.Now()})
		wantErr(t, "SetBackupRecord on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
		wantErr(t, "ClearBackupRecord on a shut-off domain", off.ClearBackupRecord(bg), virt.ErrOperationInvalid, "domain is not running")
	})
}

// definedCopy defines, not started, a copy of dom under the name
// "<name>-off" and without its UUID.
func definedCopy(t *testing.T, s Subject, dom virt.Domain) virt.Domain {
	t.Helper()
	id, err := dom.UUID(bg)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := dom.XML(bg, true)
	if err != nil {
		t.Fatal(err)
	}
	doc = strings.Replace(doc, "<uuid>"+id+"</uuid>", "", 1)
	doc = strings.Replace(doc, "<name>"+dom.Name()+"</name>", "<name>"+dom.Name()+"-off</name>", 1)
	off, err := s.Conn.DefineDomain(bg, doc)
	if err != nil {
		t.Fatalf("DefineDomain: %v", err)
	}
	if s.Undefine != nil {
		t.Cleanup(func() { deleteAll(off); s.Undefine(off.Name()) })
	}
	return off
}

// redefineWithDomain defines on the shut-off domain off what vbackup's
// backup of a shut-off domain defines: checkpoints carrying the domain's
// definition, a creation time and a description of their own, the second
// a child of the first. libvirt keeps each as given.
func redefineWithDomain(t *testing.T, off virt.Domain) {
	t.Helper()
	def, err := off.XML(bg, true)
	if err != nil {
		t.Fatal(err)
	}
	doc := func(name, parent string, created int64) string {
		x := "<domaincheckpoint><name>" + name + "</name><description>made offline</description>"
		if parent != "" {
			x += "<parent><name>" + parent + "</name></parent>"
		}
		return x + fmt.Sprintf("<creationTime>%d</creationTime>", created) +
			"<disks><disk name='vda' checkpoint='bitmap' bitmap='" + name + "'/><disk name='vdb' checkpoint='no'/></disks>" +
			def + "</domaincheckpoint>"
	}
	for _, c := range []struct {
		name, parent string
		created      int64
	}{{"o1", "", 1700000000}, {"o2", "o1", 1700000100}} {
		if _, err := off.CreateCheckpoint(bg, doc(c.name, c.parent, c.created), virt.CreateFlags{Redefine: true}); err != nil {
			t.Fatalf("redefine %s with the domain's definition on a shut-off domain: %v", c.name, err)
		}
		cp, err := off.Checkpoint(bg, c.name)
		if err != nil || cp.Parent != c.parent || !cp.Created.Equal(time.Unix(c.created, 0)) || cp.Description != "made offline" ||
			len(cp.Disks) != 2 || cp.Disks[0].Bitmap != c.name || cp.Disks[1].Checkpoint != "no" {
			t.Fatalf("redefined %s = %+v, %v", c.name, cp, err)
		}
	}
	for _, name := range []string{"o2", "o1"} {
		if err := off.DeleteCheckpoint(bg, name, virt.DeleteFlags{MetadataOnly: true}); err != nil {
			t.Fatalf("DeleteCheckpoint %s MetadataOnly on a shut-off domain: %v", name, err)
		}
	}
	assertNames(t, off)
}
