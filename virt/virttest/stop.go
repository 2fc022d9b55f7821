package virttest

import (
	"os/exec"
	"strings"
	"testing"

	"vbackup/virt"
)

// stopRules asserts what becomes of a job whose domain shuts off under it.
func stopRules(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("DomainStopsDuringJob", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return
		}
		dom := domain(t, s)
		dir := s.Folder(t)
		t.Cleanup(func() { deleteAll(dom) })
		events := subscribe(t, dom)
		if err := dom.SetBackupRecord(bg, virt.BackupRecord{Checkpoint: "d1", Pull: true}); err != nil {
			t.Fatal(err)
		}
		pull := "<domainbackup mode='pull'><server transport='unix' socket='" + dir + "/d.sock'/><disks>" +
			"<disk name='vda' type='file'><scratch file='" + dir + "/vda.scratch'/></disk><disk name='vdb' backup='no'/></disks></domainbackup>"
		if err := dom.BeginBackup(bg, pull, checkpointXML("d1", ""), virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		control(t, s, dom, "destroy")
		// libvirt ends the job as cancelled, with no message.
		ended := waitEvents(t, events, func(ev virt.Event) bool { return ev.Kind == virt.EventJobEnded })[0]
		if !ended.Job.SuccessKnown || ended.Job.Success || ended.Job.Error != "" {
			t.Errorf("job-ended event of the stopped pull: %+v", ended)
		}
		if st, err := dom.State(bg); err != nil || st.Active {
			t.Fatalf("State after the stop = %+v, %v", st, err)
		}
		_, err := dom.Job(bg, false)
		wantErr(t, "Job of the stopped domain", err, virt.ErrOperationInvalid, "domain is not running")
		// The statistics stay readable.
		done, err := dom.Job(bg, true)
		if err != nil || done.State != virt.JobCancelled || !done.Backup || !done.SuccessKnown || done.Success {
			t.Fatalf("Job(completed) of the stopped pull: %+v, %v", done, err)
		}
		_, err = dom.BackupXML(bg)
		wantErr(t, "BackupXML of the stopped domain", err, nil, "no domain backup job present")
		if _, err := dom.Checkpoint(bg, "d1"); err != nil {
			t.Fatalf("checkpoint of the stopped pull: %v; want it kept", err)
		}
		// The live metadata went with the running domain.
		_, _, err = dom.BackupRecord(bg)
		wantErr(t, "BackupRecord of the stopped domain", err, virt.ErrOperationInvalid, "domain is not running")
		control(t, s, dom, "start")
		if rec, ok, err := dom.BackupRecord(bg); err != nil || ok {
			t.Fatalf("BackupRecord after a restart = %+v, %v, %v; want none", rec, ok, err)
		}
	})
}

// startStopper is the fake's test control of a domain's run.
type startStopper interface {
	Stop()
	Start()
}

// control runs virsh's command ("destroy" or "start") on dom: through the
// fake's test controls, or virsh itself for a real QEMU (the virt
// interface can neither stop nor start a domain).
func control(t *testing.T, s Subject, dom virt.Domain, command string) {
	t.Helper()
	if d, ok := dom.(startStopper); ok {
		if command == "destroy" {
			d.Stop()
		} else {
			d.Start()
		}
		return
	}
	if !strings.HasPrefix(s.Conn.URI(), "qemu") {
		t.Fatalf("cannot %s a domain of %s", command, s.Conn.URI())
	}
	if out, err := exec.Command("virsh", "-c", s.Conn.URI(), command, dom.Name()).CombinedOutput(); err != nil {
		t.Fatalf("virsh %s %s: %v\n%s", command, dom.Name(), err, out)
	}
}
