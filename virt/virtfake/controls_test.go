package virtfake_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vbackup/virt"
	"vbackup/virt/virtfake"
)

var ctx = context.Background()

func newVM(t *testing.T) (*virtfake.Conn, *virtfake.Domain) {
	t.Helper()
	conn := virtfake.New()
	dom := conn.AddDomain(virtfake.DomainSpec{Name: "vm1", Disks: []virt.Disk{{Target: "vda"}, {Target: "vdb", Format: "raw"}}})
	return conn, dom
}

func pushXML(dir string) string {
	return "<domainbackup><disks><disk name='vda' type='file'><target file='" + filepath.Join(dir, "vda.qcow2") + "'/></disk>" +
		"<disk name='vdb' backup='no'/></disks></domainbackup>"
}

const cpXML = "<domaincheckpoint><name>c1</name><disks><disk name='vda'/></disks></domaincheckpoint>"

func TestAddDomainDefaults(t *testing.T) {
	conn, dom := newVM(t)
	if conn.URI() != "fake:///default" {
		t.Errorf("URI = %q", conn.URI())
	}
	disks, err := dom.Disks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := virt.Disk{Target: "vda", Device: "disk", Type: "file", Source: "/fake/vm1/vda.qcow2", Format: "qcow2"}
	if len(disks) != 2 || disks[0] != want || disks[1].Format != "raw" {
		t.Fatalf("Disks = %+v; want vda %+v and a raw vdb", disks, want)
	}
	if id, err := dom.UUID(ctx); err != nil || len(id) != 36 {
		t.Errorf("UUID = %q, %v", id, err)
	}
	off := conn.AddDomain(virtfake.DomainSpec{Name: "vm2", Inactive: true})
	if st, _ := off.State(ctx); st.Active {
		t.Errorf("Inactive domain runs")
	}
	if names, _ := conn.Domains(ctx, true); !slices.Equal(names, []string{"vm1"}) {
		t.Errorf("Domains(active) = %v", names)
	}
}

func TestHeldPushEndsWithEndJob(t *testing.T) {
	conn, dom := newVM(t)
	dir := t.TempDir()
	var hooked []string
	dom.OnPushComplete(func(disk, target string) error {
		hooked = append(hooked, disk)
		// The hook may call the fake: the job still runs.
		if job, err := dom.Job(ctx, false); err != nil || job.State != virt.JobRunning {
			t.Errorf("Job from the hook = %+v, %v", job, err)
		}
		return os.WriteFile(target, []byte("backup"), 0o644)
	})
	dom.HoldPush(true)
	events, _ := dom.Events(ctx)
	if err := dom.BeginBackup(ctx, pushXML(dir), cpXML, virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // longer than an unheld push takes
	dom.SetProgress("vda", 10, 100)
	if bj, ok, err := dom.BlockJob(ctx, "vda"); err != nil || !ok || bj != (virt.BlockJob{Backup: true, Cur: 10, End: 100}) {
		t.Fatalf("BlockJob = %+v, %v, %v", bj, ok, err)
	}
	if job, _ := dom.Job(ctx, false); job.State != virt.JobRunning || job.DataProcessed != 10 || job.DataTotal != 100 || job.DataRemaining != 90 {
		t.Fatalf("held push: %+v", job)
	}
	dom.EndJob(true, "")
	done, _ := dom.Job(ctx, true)
	if done.State != virt.JobCompleted || !done.Success || done.DataProcessed != 100 {
		t.Fatalf("after EndJob(true): %+v", done)
	}
	if !slices.Equal(hooked, []string{"vda"}) {
		t.Errorf("hook ran for %v", hooked)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "vda.qcow2")); err != nil || string(b) != "backup" {
		t.Errorf("target: %q, %v", b, err)
	}
	if ev := <-events; ev.Kind != virt.EventDiskJobEnded || ev.Disk != "vda" || ev.Status != "completed" {
		t.Errorf("first event %+v", ev)
	}
	if ev := <-events; ev.Kind != virt.EventJobEnded || !ev.Job.Success {
		t.Errorf("second event %+v", ev)
	}
	if !slices.Contains(conn.Calls(), "BeginBackup") {
		t.Errorf("Calls = %v", conn.Calls())
	}
}

func TestFailedJobs(t *testing.T) {
	_, dom := newVM(t)
	dom.HoldPush(true)
	if err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	dom.EndJob(false, "No space left on device")
	done, _ := dom.Job(ctx, true)
	if done.State != virt.JobFailed || done.Success || done.Error != "No space left on device" {
		t.Fatalf("after EndJob(false): %+v", done)
	}

	dom.HoldPush(false)
	dom.OnPushComplete(func(disk, target string) error { return errors.New("disk full") })
	if err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, dom)
	if done, _ := dom.Job(ctx, true); done.State != virt.JobFailed || done.Error != "disk full" {
		t.Fatalf("after a failing hook: %+v", done)
	}
}

func TestStopDuringJob(t *testing.T) {
	_, dom := newVM(t)
	events, _ := dom.Events(ctx)
	if err := dom.SetBackupRecord(ctx, virt.BackupRecord{Checkpoint: "c1"}); err != nil {
		t.Fatal(err)
	}
	pull := "<domainbackup mode='pull'><server transport='unix' socket='/run/x.sock'/><disks><disk name='vda' type='file'>" +
		"<scratch file='" + t.TempDir() + "/s'/></disk><disk name='vdb' backup='no'/></disks></domainbackup>"
	if err := dom.BeginBackup(ctx, pull, cpXML, virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	dom.Stop()
	if ev := <-events; ev.Kind != virt.EventJobEnded || ev.Job.Success || ev.Job.Error != "" {
		t.Errorf("event of the stopped job: %+v", ev)
	}
	if done, _ := dom.Job(ctx, true); done.State != virt.JobCancelled || done.Success {
		t.Errorf("stopped job: %+v", done)
	}
	if _, err := dom.Job(ctx, false); !errors.Is(err, virt.ErrOperationInvalid) {
		t.Errorf("Job of a stopped domain: %v", err)
	}
	if _, err := dom.Checkpoint(ctx, "c1"); err != nil {
		t.Errorf("checkpoint of the job: %v", err)
	}
	dom.Start()
	if _, ok, err := dom.BackupRecord(ctx); err != nil || ok {
		t.Errorf("record after a restart: %v, %v; want none", ok, err)
	}
	if err := dom.BeginBackup(ctx, pull, "", virt.BeginFlags{}); err != nil {
		t.Errorf("pull after a restart: %v", err)
	}
}

func TestBreakCheckpoint(t *testing.T) {
	_, dom := newVM(t)
	if _, err := dom.CreateCheckpoint(ctx, cpXML, virt.CreateFlags{}); err != nil {
		t.Fatal(err)
	}
	dom.BreakCheckpoint("c1")
	inc := strings.Replace(pushXML(t.TempDir()), "<disks>", "<incremental>c1</incremental><disks>", 1)
	err := dom.BeginBackup(ctx, inc, "", virt.BeginFlags{})
	if !errors.Is(err, virt.ErrCheckpointInconsistent) || !strings.Contains(err.Error(), "missing or broken bitmap 'c1' for disk 'vda'") {
		t.Fatalf("incremental from a broken checkpoint: %v", err)
	}
	doc, _ := dom.CheckpointXML(ctx, "c1", virt.XMLFlags{NoDomain: true})
	_, err = dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{Redefine: true, RedefineValidate: true})
	if !errors.Is(err, virt.ErrCheckpointInconsistent) {
		t.Fatalf("RedefineValidate of a broken checkpoint: %v", err)
	}
	if err := dom.DeleteCheckpoint(ctx, "c1", virt.DeleteFlags{}); err != nil {
		t.Fatalf("deleting a broken checkpoint: %v", err)
	}
}

func TestFailNextAndCalls(t *testing.T) {
	conn, dom := newVM(t)
	boom := errors.New("boom")
	conn.FailNext("Job", boom)
	conn.FailNext("Job", boom)
	for i := 0; i < 2; i++ {
		if _, err := dom.Job(ctx, false); err != boom {
			t.Fatalf("Job %d = %v; want the injected error", i+1, err)
		}
	}
	if _, err := dom.Job(ctx, false); err != nil {
		t.Fatalf("third Job = %v", err)
	}
	conn.FailNext("AbortJob", boom)
	if err := dom.AbortJob(ctx); err != boom {
		t.Fatalf("AbortJob = %v", err)
	}
	if got, want := conn.Calls(), []string{"Job", "Job", "Job", "AbortJob"}; !slices.Equal(got, want) {
		t.Fatalf("Calls = %v; want %v", got, want)
	}
}

func TestDisconnect(t *testing.T) {
	conn, dom := newVM(t)
	ectx, cancel := context.WithCancel(ctx)
	events, _ := dom.Events(ectx)
	conn.Disconnect()
	if ev := <-events; ev.Kind != virt.EventDisconnected {
		t.Fatalf("event = %+v", ev)
	}
	_, err := dom.Job(ctx, false)
	var verr *virt.Error
	if !errors.As(err, &verr) || err.Error() != "internal error: client socket is closed" {
		t.Fatalf("Job after Disconnect = %v", err)
	}
	if _, err := conn.Domain(ctx, "vm1"); err == nil {
		t.Fatal("Domain after Disconnect works")
	}
	conn.Reconnect()
	if _, err := dom.Job(ctx, false); err != nil {
		t.Fatalf("Job after Reconnect = %v", err)
	}
	cancel()
	for range events { // closed once ctx ends
	}
}

func TestSecondBeginWaitsForTheJob(t *testing.T) {
	conn, dom := newVM(t)
	dir := t.TempDir()
	if err := dom.BeginBackup(ctx, pushXML(dir), "", virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	// The push ends by itself while the second waits for libvirt's lock.
	if err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{}); err != nil {
		t.Fatalf("second push once the first ended: %v", err)
	}
	waitIdle(t, dom)
	dom.HoldPush(true)
	conn.SetLockWait(10 * time.Millisecond)
	if err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{}); err != nil {
		t.Fatal(err)
	}
	err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{})
	if err == nil || !strings.Contains(err.Error(), "cannot acquire state change lock") {
		t.Fatalf("second push beside a held one: %v", err)
	}
}

// Run with -race: every method may be called from any goroutine.
func TestConcurrentUse(t *testing.T) {
	conn, dom := newVM(t)
	conn.SetLockWait(time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				_, _ = dom.Job(ctx, false)
				_, _, _ = dom.BlockJob(ctx, "vda")
				_, _ = dom.Checkpoints(ctx)
				_, _ = dom.BackupXML(ctx)
				dom.SetProgress("vda", uint64(j), 100)
			}
		}()
	}
	for i := 0; i < 3; i++ {
		if err := dom.BeginBackup(ctx, pushXML(t.TempDir()), "", virt.BeginFlags{}); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	waitIdle(t, dom)
}

func waitIdle(t *testing.T, dom virt.Domain) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if job, err := dom.Job(ctx, false); err == nil && job.State == virt.JobNone {
			return
		}
	}
	t.Fatal("the job did not end")
}
