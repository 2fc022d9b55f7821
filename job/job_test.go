package job

import (
	"errors"
	"testing"

	"vbackup/progress"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// A pull job's XML as libvirt 9.0 fills it in (virsh backup-dumpxml of a
// job started with two disks, one incremental, one left out).
const pullXML = `<domainbackup mode='pull'>
  <incremental>c1</incremental>
  <server transport='unix' socket='/run/vbackup/vm1/nbd.sock'/>
  <disks>
    <disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='c1' exportname='vda' exportbitmap='backup-vda' index='3'>
      <driver type='qcow2'/>
      <scratch file='/var/lib/libvirt/qemu/vm1.vda.scratch'/>
    </disk>
    <disk name='vdb' backup='yes' type='file' backupmode='full' exportname='vdb' index='4'>
      <driver type='qcow2'/>
      <scratch file='/var/lib/libvirt/qemu/vm1.vdb.scratch'/>
    </disk>
    <disk name='vdc' backup='no'/>
  </disks>
</domainbackup>`

const pushXML = `<domainbackup mode='push'>
  <disks>
    <disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='c1' index='5'>
      <driver type='qcow2'/>
      <target file='/b/vda.qcow2'/>
    </disk>
    <disk name='vdb' backup='yes' type='block' backupmode='full' index='6'>
      <driver type='raw'/>
      <target dev='/dev/vg/b'/>
    </disk>
  </disks>
</domainbackup>`

func TestParsePull(t *testing.T) {
	var j Job
	if err := j.parse(pullXML); err != nil {
		t.Fatal(err)
	}
	if !j.Pull || j.Mode() != "pull" || j.Incremental != "c1" || j.Server.Socket != "/run/vbackup/vm1/nbd.sock" {
		t.Fatalf("job %+v", j)
	}
	want := []Disk{
		{Name: "vda", Incremental: "c1", Scratch: "/var/lib/libvirt/qemu/vm1.vda.scratch", ExportName: "vda", ExportBitmap: "backup-vda"},
		{Name: "vdb", Scratch: "/var/lib/libvirt/qemu/vm1.vdb.scratch", ExportName: "vdb"},
	}
	if len(j.Disks) != len(want) {
		t.Fatalf("disks %+v, want %+v (vdc is left out)", j.Disks, want)
	}
	for i := range want {
		if j.Disks[i] != want[i] {
			t.Errorf("disk %d: %+v, want %+v", i, j.Disks[i], want[i])
		}
	}
	if got := j.Disks[0].Bitmap(); got != "qemu:dirty-bitmap:backup-vda" {
		t.Errorf("vda's bitmap context %q", got)
	}
	if got := j.Disks[1].Bitmap(); got != "" {
		t.Errorf("a full export has a bitmap context %q", got)
	}
	if got := j.ExportURI(j.Disks[0]); got != "nbd+unix:///vda?socket=/run/vbackup/vm1/nbd.sock" {
		t.Errorf("export URI %q", got)
	}
}

func TestParsePush(t *testing.T) {
	var j Job
	if err := j.parse(pushXML); err != nil {
		t.Fatal(err)
	}
	if j.Pull || j.Mode() != "push" {
		t.Fatalf("job %+v", j)
	}
	want := []Disk{{Name: "vda", Incremental: "c1", Target: "/b/vda.qcow2"}, {Name: "vdb", Target: "/dev/vg/b"}}
	for i := range want {
		if i >= len(j.Disks) || j.Disks[i] != want[i] {
			t.Fatalf("disks %+v, want %+v", j.Disks, want)
		}
	}
	if names := j.DiskNames(); len(names) != 2 || names[0] != "vda" || names[1] != "vdb" {
		t.Errorf("DiskNames %v", names)
	}
}

func TestCheckpointNeedsRecord(t *testing.T) {
	j := Job{Record: virt.BackupRecord{Checkpoint: "c2"}}
	if j.Checkpoint() != "" {
		t.Error("a job without vbackup's record claims a checkpoint")
	}
	j.HasRecord = true
	if j.Checkpoint() != "c2" {
		t.Errorf("Checkpoint %q, want c2", j.Checkpoint())
	}
}

// How a job ended, as libvirt reports it, maps to what the user is shown.
func TestOutcome(t *testing.T) {
	cases := []struct {
		name      string
		pull      bool
		done      virt.Job
		err       error
		ended     *virt.Job
		state     string
		wantError string
	}{
		{name: "push completed", done: virt.Job{State: virt.JobCompleted, DataProcessed: 42}, state: progress.JobCompleted},
		{name: "push completed, success known", done: virt.Job{State: virt.JobCompleted, SuccessKnown: true, Success: true}, state: progress.JobCompleted},
		// libvirt reports a cancelled push as completed with an error.
		{name: "cancelled push reported as completed", done: virt.Job{State: virt.JobCompleted, SuccessKnown: true, Error: "Operation canceled"},
			state: progress.JobCancelled, wantError: "Operation canceled"},
		{name: "cancelled", done: virt.Job{State: virt.JobCancelled}, state: progress.JobCancelled},
		{name: "failed", done: virt.Job{State: virt.JobFailed, Error: "No space left on device"}, state: progress.JobFailed, wantError: "No space left on device"},
		// The event knows what the completed statistics may not.
		{name: "event says failed", done: virt.Job{State: virt.JobCompleted}, ended: &virt.Job{SuccessKnown: true, Error: "I/O error"},
			state: progress.JobFailed, wantError: "I/O error"},
		{name: "statistics unreadable", err: errors.New("connection lost"), state: progress.JobUnknown, wantError: "connection lost"},
		// A pull ends by being aborted: that is its normal end.
		{name: "pull aborted", pull: true, done: virt.Job{State: virt.JobCancelled}, state: progress.JobCompleted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Outcome(c.pull, c.done, c.err, c.ended)
			if res.State != c.state || res.Error != c.wantError {
				t.Errorf("Outcome = %s %q, want %s %q", res.State, res.Error, c.state, c.wantError)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	for _, c := range []struct {
		done virt.Job
		want bool
	}{
		{virt.Job{State: virt.JobCompleted, Backup: true}, false},
		{virt.Job{State: virt.JobCompleted, SuccessKnown: true, Success: true}, false},
		{virt.Job{State: virt.JobCompleted, SuccessKnown: true}, true},
		{virt.Job{State: virt.JobFailed}, true},
		{virt.Job{State: virt.JobCancelled}, true},
		{virt.Job{State: virt.JobNone}, false},
	} {
		if got := Failed(c.done); got != c.want {
			t.Errorf("Failed(%+v) = %v, want %v", c.done, got, c.want)
		}
	}
}

func TestParseServer(t *testing.T) {
	cases := []struct {
		in   string
		tls  bool
		want ServerRequest
	}{
		{"unix:/run/x.sock", false, ServerRequest{Spec: xmlgen.Server{Socket: "/run/x.sock"}, Set: true}},
		{"tcp:localhost:10809", true, ServerRequest{Spec: xmlgen.Server{Host: "localhost", Port: 10809, TLS: true}, Set: true}},
		{"tcp:127.0.0.1", false, ServerRequest{Spec: xmlgen.Server{Host: "127.0.0.1"}, Set: true, PickPort: true}},
		{"tcp:[::1]", false, ServerRequest{Spec: xmlgen.Server{Host: "::1"}, Set: true, PickPort: true}},
		{"tcp:[::1]:10809", false, ServerRequest{Spec: xmlgen.Server{Host: "::1", Port: 10809}, Set: true}},
	}
	for _, c := range cases {
		got, err := ParseServer(c.in, c.tls)
		if err != nil || got != c.want {
			t.Errorf("ParseServer(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	if _, err := ParseServer("udp:x", false); err == nil {
		t.Error("ParseServer(udp:x) succeeded")
	}
}

func TestNBDURI(t *testing.T) {
	cases := []struct {
		srv  xmlgen.Server
		want string
	}{
		{xmlgen.Server{Socket: "/s"}, "nbd+unix:///vda?socket=/s"},
		{xmlgen.Server{Socket: "/s", TLS: true}, "nbds+unix:///vda?socket=/s"},
		{xmlgen.Server{Host: "::1", Port: 10809}, "nbd://[::1]:10809/vda"},
		{xmlgen.Server{Host: "h", Port: 1, TLS: true}, "nbds://h:1/vda"},
	}
	for _, c := range cases {
		if got := NBDURI(c.srv, "vda"); got != c.want {
			t.Errorf("NBDURI(%+v) = %q, want %q", c.srv, got, c.want)
		}
	}
	if !LocalURI("qemu:///system") || !LocalURI("qemu+unix:///session?socket=/x") || LocalURI("qemu+ssh://h/system") {
		t.Error("LocalURI")
	}
}
