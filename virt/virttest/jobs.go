package virttest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// jobRules asserts how backup jobs begin, refuse, report and end, on the
// subjects that run them (Folder set); the test driver refuses them all.
func jobRules(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("NoJob", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		_, bxErr := dom.BackupXML(bg)
		_, _, bjErr := dom.BlockJob(bg, "vda")
		_, doneErr := dom.Job(bg, true)
		if s.Folder == nil {
			wantErr(t, "AbortJob", dom.AbortJob(bg), virt.ErrUnsupported)
			wantErr(t, "BackupXML", bxErr, virt.ErrUnsupported)
			wantErr(t, "BlockJob", bjErr, virt.ErrUnsupported)
			wantErr(t, "Job(completed)", doneErr, virt.ErrUnsupported)
			return
		}
		wantErr(t, "AbortJob with no job", dom.AbortJob(bg), virt.ErrOperationInvalid, "no job is active")
		// VIR_ERR_NO_DOMAIN_BACKUP has no kind.
		wantErr(t, "BackupXML with no job", bxErr, nil, "no domain backup job present")
		if bjErr != nil {
			t.Fatalf("BlockJob(vda) with no job: %v", bjErr)
		}
		if _, ok, _ := dom.BlockJob(bg, "vda"); ok {
			t.Fatal("BlockJob(vda) with no job reports one")
		}
		_, _, err := dom.BlockJob(bg, "vdz")
		wantErr(t, "BlockJob(vdz)", err, virt.ErrInvalidArg, "vdz")
		if done, err := dom.Job(bg, true); err != nil || done.State != virt.JobNone {
			t.Fatalf("Job(completed) with no job ever = %+v, %v; want none", done, err)
		}
	})

	t.Run("BeginBackupRefusals", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return // BackupJobs asserts the test driver's refusal
		}
		dom := domain(t, s)
		dir := s.Folder(t)
		create(t, dom, "k1")
		t.Cleanup(func() { deleteAll(dom) })
		push := func(name, attrs string) string {
			return "<domainbackup>" + attrs + "<disks><disk name='vda' type='file'><target file='" + dir + "/" + name + "'/></disk>" +
				"<disk name='vdb' backup='no'/></disks></domainbackup>"
		}
		// A refused job leaves no checkpoint of those given with it (k2, k3).
		err := dom.BeginBackup(bg, push("a.qcow2", "<incremental>nope</incremental>"), checkpointXML("k2", ""), virt.BeginFlags{})
		wantErr(t, "incremental from an unknown checkpoint", err, virt.ErrNoCheckpoint, "nope", "vda")
		both := "<domainbackup><incremental>k1</incremental><disks><disk name='vda' type='file'><target file='" + dir + "/b.qcow2'/></disk>" +
			"<disk name='vdb' type='file'><target file='" + dir + "/b.raw'/></disk></disks></domainbackup>"
		err = dom.BeginBackup(bg, both, checkpointXML("k3", ""), virt.BeginFlags{})
		wantErr(t, "incremental of vdb, which has no bitmap", err, virt.ErrCheckpointInconsistent, "k1", "vdb")
		if err := os.WriteFile(dir+"/there.qcow2", nil, 0o644); err != nil {
			t.Fatal(err)
		}
		err = dom.BeginBackup(bg, push("there.qcow2", ""), "", virt.BeginFlags{})
		wantErr(t, "push onto an existing file", err, virt.ErrInvalidArg, "there.qcow2", "exists")
		err = dom.BeginBackup(bg, push("c.qcow2", ""), checkpointXML("k1", ""), virt.BeginFlags{})
		wantErr(t, "BeginBackup with a checkpoint name taken", err, nil, "k1 already exists")
		vdz := "<domainbackup><disks><disk name='vdz' type='file'><target file='" + dir + "/z.qcow2'/></disk></disks></domainbackup>"
		wantErr(t, "BeginBackup of vdz", dom.BeginBackup(bg, vdz, "", virt.BeginFlags{}), virt.ErrInvalidArg, "vdz")
		tcp := "<domainbackup mode='pull'><server transport='tcp' name='localhost'/><disks><disk name='vda' type='file'>" +
			"<scratch file='" + dir + "/t.scratch'/></disk><disk name='vdb' backup='no'/></disks></domainbackup>"
		wantErr(t, "pull over TCP with no port", dom.BeginBackup(bg, tcp, "", virt.BeginFlags{}), virt.ErrUnsupported, "port")
		wantErr(t, "BeginBackup of \"\"", dom.BeginBackup(bg, "", "", virt.BeginFlags{}), virt.ErrXML)
		if job, err := dom.Job(bg, false); err != nil || job.State != virt.JobNone {
			t.Fatalf("after refusals: Job = %+v, %v; want none", job, err)
		}
		assertNames(t, dom, "k1")
	})

	t.Run("PullDefaults", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return
		}
		dom := domain(t, s)
		dir := s.Folder(t)
		t.Cleanup(func() { deleteAll(dom) })
		pull := "<domainbackup mode='pull'><server transport='unix' socket='" + dir + "/p.sock'/><disks>" +
			"<disk name='vda' type='file'><scratch file='" + dir + "/vda.scratch'/></disk><disk name='vdb' backup='no'/></disks></domainbackup>"
		if err := dom.BeginBackup(bg, pull, checkpointXML("j1", ""), virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		x := backupXML(t, dom)
		if x.Pull == nil || x.Pull.Server == nil || x.Pull.Server.UNIX == nil || x.Pull.Server.UNIX.Socket != dir+"/p.sock" {
			t.Fatalf("pull XML: %+v", x)
		}
		vda, vdb := x.Pull.Disks.Disks[0], x.Pull.Disks.Disks[1]
		if vda.Name != "vda" || vda.Backup != "yes" || vda.BackupMode != "full" || vda.ExportName != "vda" || vda.ExportBitmap != "" ||
			vda.Incremental != "" || vda.Driver == nil || vda.Driver.Type != "qcow2" || vda.Scratch.File.File != dir+"/vda.scratch" {
			t.Errorf("full pull of vda: %+v", vda)
		}
		if vdb.Name != "vdb" || vdb.Backup != "no" {
			t.Errorf("vdb left out: %+v", vdb)
		}
		job, err := dom.Job(bg, false)
		if err != nil || job.State != virt.JobRunning || !job.Backup || !job.TempKnown || job.DataKnown {
			t.Fatalf("running pull: %+v, %v; want scratch counts, no data counts", job, err)
		}
		if bj, ok, err := dom.BlockJob(bg, "vda"); err != nil || !ok || !bj.Backup || bj.End == 0 {
			t.Fatalf("BlockJob(vda) of a pull: %+v, %v, %v", bj, ok, err)
		}
		if _, ok, err := dom.BlockJob(bg, "vdb"); err != nil || ok {
			t.Fatalf("BlockJob(vdb), left out: %v, %v; want none", ok, err)
		}
		if err := dom.AbortJob(bg); err != nil {
			t.Fatal(err)
		}
		waitNoJob(t, dom)
		// An aborted pull is a completed job, with QEMU's message.
		for i := 0; i < 2; i++ {
			done, err := dom.Job(bg, true)
			if err != nil || done.State != virt.JobCompleted || !done.Backup || !done.SuccessKnown || !done.Success ||
				done.Error != "Operation canceled" || !done.TempKnown {
				t.Fatalf("aborted pull, read %d: %+v, %v", i+1, done, err)
			}
		}
		if _, err := dom.Checkpoint(bg, "j1"); err != nil {
			t.Fatalf("the checkpoint made with the aborted pull: %v; want it kept", err)
		}

		// With no disk listed every disk is exported, its scratch file named
		// after its image and the checkpoint made with the job.
		disks, err := dom.Disks(bg)
		if err != nil {
			t.Fatal(err)
		}
		all := "<domainbackup mode='pull'><server transport='unix' socket='" + dir + "/q.sock'/></domainbackup>"
		j2 := "<domaincheckpoint><name>j2</name><disks><disk name='vda'/></disks></domaincheckpoint>"
		if err := dom.BeginBackup(bg, all, j2, virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		x = backupXML(t, dom)
		for i, d := range x.Pull.Disks.Disks {
			if d.Name != disks[i].Target || d.Backup != "yes" || d.ExportName != d.Name || d.Scratch == nil || d.Scratch.File == nil ||
				d.Scratch.File.File != disks[i].Source+".j2" || d.Driver == nil || d.Driver.Type != "qcow2" {
				t.Errorf("pull of every disk, disk %d: %+v (scratch %+v)", i, d, d.Scratch)
			}
		}
		abort(t, dom)

		// Incremental: the bitmap exported is named after the disk.
		inc := strings.Replace(pull, "<server", "<incremental>j1</incremental><server", 1)
		if err := dom.BeginBackup(bg, inc, "", virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		vda = backupXML(t, dom).Pull.Disks.Disks[0]
		if vda.BackupMode != "incremental" || vda.Incremental != "j1" || vda.ExportName != "vda" || vda.ExportBitmap != "backup-vda" {
			t.Errorf("incremental pull of vda: %+v", vda)
		}
		abort(t, dom)
	})

	t.Run("SecondJobRefused", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return
		}
		dom := domain(t, s)
		dir := s.Folder(t)
		t.Cleanup(func() { deleteAll(dom) })
		pull := "<domainbackup mode='pull'><server transport='unix' socket='" + dir + "/s.sock'/><disks>" +
			"<disk name='vda' type='file'><scratch file='" + dir + "/vda.scratch'/></disk><disk name='vdb' backup='no'/></disks></domainbackup>"
		if err := dom.BeginBackup(bg, pull, "", virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		push := "<domainbackup><disks><disk name='vda' type='file'><target file='" + dir + "/vda.qcow2'/></disk>" +
			"<disk name='vdb' backup='no'/></disks></domainbackup>"
		// libvirt waits for the domain's job lock (30 s), then gives up.
		err := dom.BeginBackup(bg, push, checkpointXML("s2", ""), virt.BeginFlags{})
		wantErr(t, "BeginBackup while a pull runs", err, nil, "cannot acquire state change lock")
		if doc, err := dom.BackupXML(bg); err != nil || !strings.Contains(doc, "mode='pull'") {
			t.Fatalf("the pull after a refused second job: %v\n%s", err, doc)
		}
		assertNames(t, dom)
		abort(t, dom)
	})

	t.Run("CancelledPush", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return
		}
		dom := domain(t, s)
		dir := s.Folder(t)
		t.Cleanup(func() { deleteAll(dom) })
		events := subscribe(t, dom)
		fill(t, s, dom, "vda")
		// A push of a small disk can end before AbortJob reaches it, or
		// complete even though AbortJob returned: try again until one is
		// cancelled.
		target, cp := "", ""
		for i := 1; cp == "" && i <= 40; i++ {
			name := "x" + strconv.Itoa(i)
			target = dir + "/" + name + ".qcow2"
			push := "<domainbackup><disks><disk name='vda' type='file'><target file='" + target + "'/></disk>" +
				"<disk name='vdb' backup='no'/></disks></domainbackup>"
			if err := dom.BeginBackup(bg, push, checkpointXML(name, ""), virt.BeginFlags{}); err != nil {
				t.Fatal(err)
			}
			if err := dom.AbortJob(bg); err != nil && !errors.Is(err, virt.ErrOperationInvalid) {
				t.Fatal(err)
			}
			waitNoJob(t, dom)
			if done, err := dom.Job(bg, true); err != nil {
				t.Fatal(err)
			} else if done.State != virt.JobCompleted {
				cp = name
				t.Logf("push %d was cancelled", i)
			}
		}
		if cp == "" {
			t.Fatal("40 pushes all completed before AbortJob reached them")
		}
		for i := 0; i < 2; i++ {
			done, err := dom.Job(bg, true)
			if err != nil || done.State != virt.JobCancelled || !done.Backup || !done.SuccessKnown || done.Success || done.Error != "Operation canceled" {
				t.Fatalf("cancelled push, read %d: %+v, %v", i+1, done, err)
			}
		}
		if _, err := dom.Checkpoint(bg, cp); err != nil {
			t.Fatalf("checkpoint %s of the cancelled push: %v; want it kept", cp, err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target of the cancelled push: %v; want it removed by libvirt", err)
		}
		got := waitEvents(t, events, func(ev virt.Event) bool {
			return ev.Kind == virt.EventJobEnded && ev.Job.SuccessKnown && !ev.Job.Success
		}, func(ev virt.Event) bool {
			return ev.Kind == virt.EventDiskJobEnded && ev.Disk == "vda" && ev.Status == "cancelled"
		})
		if got[0].Job.Error != "Operation canceled" {
			t.Errorf("job-ended event of the cancelled push: %+v", got[0])
		}
	})
}

// fill writes 48 MiB into disk of a real QEMU's running domain, through
// QEMU's own block backend as a guest would, so that a push of it takes
// long enough to be aborted: a push of the suite's empty disk ends before
// libvirt has returned from BackupBegin. The virt interface has no way to
// write, so this asks virsh; other subjects need nothing.
func fill(t *testing.T, s Subject, dom virt.Domain, disk string) {
	t.Helper()
	if !strings.HasPrefix(s.Conn.URI(), "qemu") {
		return
	}
	doc, err := dom.XML(bg, false)
	if err != nil {
		t.Fatal(err)
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(doc); err != nil {
		t.Fatal(err)
	}
	alias := ""
	for _, x := range def.Devices.Disks {
		if x.Target != nil && x.Target.Dev == disk && x.Alias != nil {
			alias = x.Alias.Name
		}
	}
	cmd := "qemu-io -d /machine/peripheral/" + alias + "/virtio-backend \"write -P 0xcd 0 48M\""
	out, err := exec.Command("virsh", "-c", s.Conn.URI(), "qemu-monitor-command", dom.Name(), "--hmp", cmd).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Logf("filling %s (for a push slow enough to abort) failed: %v %s", disk, err, out)
	}
}

func backupXML(t *testing.T, dom virt.Domain) *libvirtxml.DomainBackup {
	t.Helper()
	doc, err := dom.BackupXML(bg)
	if err != nil {
		t.Fatal(err)
	}
	x := &libvirtxml.DomainBackup{}
	if err := x.Unmarshal(doc); err != nil {
		t.Fatalf("BackupXML: %v\n%s", err, doc)
	}
	if x.Pull != nil && (x.Pull.Disks == nil || len(x.Pull.Disks.Disks) != 2) {
		t.Fatalf("BackupXML lists not both disks:\n%s", doc)
	}
	return x
}

func abort(t *testing.T, dom virt.Domain) {
	t.Helper()
	if err := dom.AbortJob(bg); err != nil {
		t.Fatal(err)
	}
	waitNoJob(t, dom)
}

// subscribe opens dom's events for the rest of the test. (libvirtconn's
// channel is not closed when its context ends: nothing here relies on it.)
func subscribe(t *testing.T, dom virt.Domain) <-chan virt.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(bg)
	t.Cleanup(cancel)
	ch, err := dom.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// waitEvents waits at most 10 s for events that the matches accept, one
// each, in any order (libvirt sends a disk's and the job's end in either),
// skipping the others; it returns them in the order of matches.
func waitEvents(t *testing.T, ch <-chan virt.Event, matches ...func(virt.Event) bool) []virt.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	found := make([]virt.Event, len(matches))
	seen, left := []virt.Event(nil), len(matches)
	for left > 0 {
		select {
		case ev := <-ch:
			seen = append(seen, ev)
			for i, match := range matches {
				if found[i].Kind == "" && match(ev) {
					found[i] = ev
					left--
					break
				}
			}
		case <-timeout:
			t.Fatalf("%d of %d events missing after 10 s; seen: %+v", left, len(matches), seen)
		}
	}
	return found
}
