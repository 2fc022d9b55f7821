// Package virttest is the conformance suite of virt.Conn: the same
// behaviour is asserted of every implementation (libvirt's test driver, a
// real libvirtd + QEMU, the in-memory fake of virt/virtfake), so that none
// drifts from what libvirt does.
package virttest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/virt"
)

// Subject is one implementation under test: a connection and a running
// domain on it whose disks are vda (qcow2) and vdb (raw), with no checkpoint.
type Subject struct {
	Conn   virt.Conn
	Domain string
	// Size reports whether the implementation fills in bitmap sizes for
	// XMLFlags.Size (the test driver ignores the flag).
	Size bool
	// Folder, for an implementation that runs backup jobs, makes a folder
	// the hypervisor can write; nil for one that refuses them.
	Folder func(t *testing.T) string
	// Undefine removes a domain the suite defined; nil where the state is
	// thrown away with the connection (the test driver).
	Undefine func(name string)
	// Guest, for an implementation that has one, names a running domain
	// of Conn whose guest agent answers; nil for none.
	Guest func(t *testing.T) string
	// Pool, for an implementation with storage pools, makes a fresh
	// directory pool, started when active, and returns its name; nil for
	// none (storage.go).
	Pool func(t *testing.T, active bool) string
}

// Run runs the suite; fresh returns a new Subject for each subtest.
func Run(t *testing.T, fresh func(t *testing.T) Subject) {
	ctx := context.Background()

	t.Run("UnknownDomain", func(t *testing.T) {
		s := fresh(t)
		_, err := s.Conn.Domain(ctx, "no-such-domain")
		wantErr(t, "Domain(no-such-domain)", err, virt.ErrNoDomain, "Domain not found")
		if !testDriver(s) { // which says no more
			wantErr(t, "Domain(no-such-domain)", err, virt.ErrNoDomain, "no domain with matching name 'no-such-domain'")
		}
		if strings.Contains(err.Error(), "virError") {
			t.Errorf("error leaks the binding's frame: %v", err)
		}
	})

	t.Run("DomainsListsIt", func(t *testing.T) {
		s := fresh(t)
		names, err := s.Conn.Domains(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, s.Domain) {
			t.Fatalf("Domains(active) = %v, want it to hold %s", names, s.Domain)
		}
	})

	t.Run("StateAndDisks", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		st, err := dom.State(ctx)
		if err != nil || !st.Active || st.State != "running" {
			t.Fatalf("State = %+v, %v; want running", st, err)
		}
		disks, err := dom.Disks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range disks {
			got = append(got, d.Target+":"+d.Format)
		}
		if strings.Join(got, " ") != "vda:qcow2 vdb:raw" {
			t.Fatalf("Disks = %v, want vda:qcow2 vdb:raw", got)
		}
		if !disks[0].CanCarryBitmap() || disks[1].CanCarryBitmap() {
			t.Errorf("CanCarryBitmap: vda %v, vdb %v; want true, false", disks[0].CanCarryBitmap(), disks[1].CanCarryBitmap())
		}
	})

	t.Run("DefinitionRoundTrip", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		id, err := dom.UUID(ctx)
		if err != nil || len(id) != 36 {
			t.Fatalf("UUID = %q, %v; want a UUID", id, err)
		}
		doc, err := dom.XML(ctx, true)
		if err != nil || !strings.Contains(doc, "<uuid>"+id+"</uuid>") {
			t.Fatalf("XML(inactive) = %.200q, %v; want the definition with its UUID", doc, err)
		}
		// A copy under a new name and without the UUID defines a new domain.
		copyXML := strings.Replace(doc, "<uuid>"+id+"</uuid>", "", 1)
		copyXML = strings.Replace(copyXML, "<name>"+s.Domain+"</name>", "<name>"+s.Domain+"-copy</name>", 1)
		def, err := s.Conn.DefineDomain(ctx, copyXML)
		if err != nil {
			t.Fatalf("DefineDomain: %v", err)
		}
		if s.Undefine != nil {
			t.Cleanup(func() { s.Undefine(s.Domain + "-copy") })
		}
		if def.Name() != s.Domain+"-copy" {
			t.Errorf("defined domain is named %q, want %q", def.Name(), s.Domain+"-copy")
		}
		if other, err := def.UUID(ctx); err != nil || other == id {
			t.Errorf("defined domain's UUID = %q, %v; want a new one", other, err)
		}
		if st, err := def.State(ctx); err != nil || st.Active {
			t.Errorf("defined domain's state = %+v, %v; want shut off", st, err)
		}
		if found, err := s.Conn.Domain(ctx, id); err != nil || found.Name() != s.Domain {
			t.Errorf("Domain(its UUID) = %v, %v; want %s", found, err, s.Domain)
		}
		// A second domain of the same name, or of the same UUID, is refused
		// (VIR_ERR_OPERATION_FAILED: no kind).
		dup := strings.Replace(doc, "<uuid>"+id+"</uuid>", "", 1)
		_, err = s.Conn.DefineDomain(ctx, dup)
		wantErr(t, "DefineDomain of a second "+s.Domain, err, nil, "already exists with uuid "+id)
		other := strings.Replace(doc, "<name>"+s.Domain+"</name>", "<name>"+s.Domain+"-other</name>", 1)
		_, err = s.Conn.DefineDomain(ctx, other)
		wantErr(t, "DefineDomain of another domain with its UUID", err, nil, "is already defined with uuid "+id)
		// Its own XML again only updates its definition.
		if again, err := s.Conn.DefineDomain(ctx, doc); err != nil || again.Name() != s.Domain {
			t.Errorf("DefineDomain of its own XML = %v, %v; want it updated", again, err)
		}
	})

	t.Run("CheckpointLifecycle", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		if cps, err := dom.Checkpoints(ctx); err != nil || len(cps) != 0 {
			t.Fatalf("fresh domain: Checkpoints = %v, %v; want none", cps, err)
		}
		for _, name := range []string{"c1", "c2", "c3"} {
			got, err := dom.CreateCheckpoint(ctx, checkpointXML(name, "made by the suite"), virt.CreateFlags{})
			if err != nil || got != name {
				t.Fatalf("CreateCheckpoint(%s) = %q, %v", name, got, err)
			}
		}
		cps, err := dom.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		parents := map[string]string{}
		for _, cp := range cps {
			parents[cp.Name] = cp.Parent
			if cp.Created.IsZero() {
				t.Errorf("%s: no creation time", cp.Name)
			}
		}
		if len(cps) != 3 || parents["c1"] != "" || parents["c2"] != "c1" || parents["c3"] != "c2" {
			t.Fatalf("parents = %v; want c1 root, c2 under c1, c3 under c2", parents)
		}
		c2, err := dom.Checkpoint(ctx, "c2")
		if err != nil {
			t.Fatal(err)
		}
		if c2.Description != "made by the suite" || len(c2.Disks) != 2 ||
			c2.Disks[0] != (virt.CheckpointDisk{Name: "vda", Checkpoint: "bitmap", Bitmap: "c2"}) ||
			c2.Disks[1].Checkpoint != "no" {
			t.Fatalf("Checkpoint(c2) = %+v", c2)
		}

		doc, err := dom.CheckpointXML(ctx, "c2", virt.XMLFlags{NoDomain: true, Size: s.Size})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(doc, "<domain ") {
			t.Errorf("NoDomain XML holds a <domain>:\n%s", doc)
		}
		if s.Size && !strings.Contains(doc, "size='") {
			t.Errorf("Size XML has no size attribute:\n%s", doc)
		}
		full, err := dom.CheckpointXML(ctx, "c2", virt.XMLFlags{})
		if err != nil || !strings.Contains(full, "<domain ") {
			t.Fatalf("full XML: %v\n%s", err, full)
		}

		// Redefining from the full XML (what checkpoint-edit does) keeps it.
		if _, err := dom.CreateCheckpoint(ctx, full, virt.CreateFlags{Redefine: true}); err != nil {
			t.Fatalf("redefine c2: %v", err)
		}

		if err := dom.DeleteCheckpoint(ctx, "c2", virt.DeleteFlags{ChildrenOnly: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom, "c1", "c2")
		if err := dom.DeleteCheckpoint(ctx, "c1", virt.DeleteFlags{Children: true}); err != nil {
			t.Fatal(err)
		}
		assertNames(t, dom)
	})

	t.Run("UnknownCheckpoint", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		_, err := dom.Checkpoint(ctx, "nope")
		wantErr(t, "Checkpoint(nope)", err, virt.ErrNoCheckpoint, "no domain checkpoint with matching name 'nope'")
		_, err = dom.CheckpointXML(ctx, "nope", virt.XMLFlags{})
		wantErr(t, "CheckpointXML(nope)", err, virt.ErrNoCheckpoint, "'nope'")
		wantErr(t, "DeleteCheckpoint(nope)", dom.DeleteCheckpoint(ctx, "nope", virt.DeleteFlags{}), virt.ErrNoCheckpoint, "'nope'")
	})

	t.Run("BackupRecord", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		if _, ok, err := dom.BackupRecord(ctx); err != nil || ok {
			t.Fatalf("fresh domain: BackupRecord = %v, %v; want none", ok, err)
		}
		want := virt.BackupRecord{Checkpoint: "c9", Pull: true, Started: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC),
			Dir: "/backup/vm1", Host: "host1", PID: 4242, Freezing: true}
		if err := dom.SetBackupRecord(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, ok, err := dom.BackupRecord(ctx)
		if err != nil || !ok || !got.Started.Equal(want.Started) {
			t.Fatalf("BackupRecord = %+v, %v, %v; want %+v", got, ok, err, want)
		}
		if got.Started = want.Started; got != want {
			t.Fatalf("BackupRecord = %+v; want %+v", got, want)
		}
		// Started is kept to the second; the discard mark is kept too.
		want = virt.BackupRecord{Checkpoint: "c9", Discard: true, Started: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
		if err := dom.SetBackupRecord(ctx, virt.BackupRecord{Checkpoint: "c9", Discard: true, Started: want.Started.Add(400 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := dom.BackupRecord(ctx); err != nil || !ok || !got.Started.Equal(want.Started) || !got.Discard || got.Pull || got.Dir != "" || got.Freezing {
			t.Fatalf("second BackupRecord = %+v, %v, %v; want %+v", got, ok, err, want)
		}
		if err := dom.ClearBackupRecord(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := dom.BackupRecord(ctx); err != nil || ok {
			t.Fatalf("after clear: BackupRecord = %v, %v; want none", ok, err)
		}
	})

	t.Run("BackupJobs", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		if s.Folder == nil {
			err := dom.BeginBackup(ctx, "<domainbackup/>", "", virt.BeginFlags{})
			if !errors.Is(err, virt.ErrUnsupported) {
				t.Fatalf("BeginBackup = %v, want ErrUnsupported", err)
			}
			if _, err := dom.Job(ctx, false); !errors.Is(err, virt.ErrUnsupported) {
				t.Fatalf("Job = %v, want ErrUnsupported", err)
			}
			if err := dom.AbortJob(ctx); !errors.Is(err, virt.ErrUnsupported) {
				t.Fatalf("AbortJob = %v, want ErrUnsupported", err)
			}
			return
		}
		dir := s.Folder(t)
		if job, err := dom.Job(ctx, false); err != nil || job.State != virt.JobNone {
			t.Fatalf("idle domain: Job = %+v, %v", job, err)
		}
		events := subscribe(t, dom)
		backup := "<domainbackup><disks><disk name='vda' type='file'><target file='" + dir + "/vda.qcow2'/><driver type='qcow2'/></disk>" +
			"<disk name='vdb' backup='no'/></disks></domainbackup>"
		if err := dom.BeginBackup(ctx, backup, checkpointXML("j1", "with the job"), virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		// The checkpoint exists as soon as the job starts.
		if _, err := dom.Checkpoint(ctx, "j1"); err != nil {
			t.Fatalf("checkpoint of the job: %v", err)
		}
		// The same target again: libvirt waits for the first job to end
		// (SecondJobRefused), then refuses to write over its target.
		err := dom.BeginBackup(ctx, backup, "", virt.BeginFlags{})
		wantErr(t, "a second push into the same target", err, virt.ErrInvalidArg, "vda.qcow2", "exists")
		deadline := time.Now().Add(30 * time.Second)
		for {
			job, err := dom.Job(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if job.State != virt.JobRunning {
				break
			}
			if !job.Backup || !job.DataKnown {
				t.Errorf("running push: %+v", job)
			}
			if time.Now().After(deadline) {
				t.Fatal("push of a 64 MiB disk still running after 30 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := 0; i < 2; i++ { // kept for the next reader
			done, err := dom.Job(ctx, true)
			if err != nil || done.State != virt.JobCompleted || !done.Backup || done.DataTotal == 0 || done.DataProcessed != done.DataTotal ||
				!done.SuccessKnown || !done.Success || done.Error != "" {
				t.Fatalf("completed job, read %d: %+v, %v", i+1, done, err)
			}
		}
		ended := waitEvents(t, events, func(ev virt.Event) bool { return ev.Kind == virt.EventJobEnded },
			func(ev virt.Event) bool {
				return ev.Kind == virt.EventDiskJobEnded && ev.Disk == "vda" && ev.Status == "completed"
			})[0]
		if !ended.Job.SuccessKnown || !ended.Job.Success || ended.Job.Error != "" || !ended.Job.DataKnown || ended.Job.DataTotal == 0 {
			t.Errorf("job-ended event of the push: %+v", ended)
		}

		// Pull: an NBD export over a unix socket until the job is aborted.
		sock := dir + "/nbd.sock"
		pull := "<domainbackup mode='pull'><server transport='unix' socket='" + sock + "'/><incremental>j1</incremental>" +
			"<disks><disk name='vda' type='file'><scratch file='" + dir + "/vda.scratch'/><driver type='qcow2'/></disk>" +
			"<disk name='vdb' backup='no'/></disks></domainbackup>"
		if err := dom.BeginBackup(ctx, pull, "", virt.BeginFlags{}); err != nil {
			t.Fatal(err)
		}
		doc, err := dom.BackupXML(ctx)
		if err != nil || !strings.Contains(doc, "mode='pull'") || !strings.Contains(doc, "exportbitmap='backup-vda'") {
			t.Fatalf("BackupXML = %v\n%s", err, doc)
		}
		job, err := dom.Job(ctx, false)
		if err != nil || job.State != virt.JobRunning || !job.Backup || !job.TempKnown {
			t.Fatalf("running pull: %+v, %v", job, err)
		}
		if err := dom.AbortJob(ctx); err != nil {
			t.Fatal(err)
		}
		// AbortJob returns once QEMU has been asked; the job may take a
		// moment to wind down on a loaded host.
		waitNoJob(t, dom)
		if _, err := dom.BackupXML(ctx); err == nil {
			t.Fatal("BackupXML after the job ended")
		}
	})

	t.Run("UnknownDiskRefused", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		doc := "<domaincheckpoint><name>x</name><disks><disk name='vdz' checkpoint='bitmap'/></disks></domaincheckpoint>"
		_, err := dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{})
		wantErr(t, "CreateCheckpoint(vdz)", err, virt.ErrInvalidArg, "no disk named 'vdz'")
		assertNames(t, dom)
	})

	checkpointRules(t, fresh)
	inactiveDomain(t, fresh)
	jobRules(t, fresh)
	stopRules(t, fresh)
	instantRules(t, fresh)
	agentRules(t, fresh)
	storageRules(t, fresh)
}

// waitNoJob waits until the domain has no job, for at most 30 s.
func waitNoJob(t *testing.T, dom virt.Domain) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		job, err := dom.Job(context.Background(), false)
		if err == nil && job.State == virt.JobNone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after abort: Job = %+v, %v", job, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func domain(t *testing.T, s Subject) virt.Domain {
	t.Helper()
	dom, err := s.Conn.Domain(context.Background(), s.Domain)
	if err != nil {
		t.Fatal(err)
	}
	return dom
}

func checkpointXML(name, description string) string {
	return "<domaincheckpoint><name>" + name + "</name><description>" + description + "</description>" +
		"<disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>"
}

func assertNames(t *testing.T, dom virt.Domain, want ...string) {
	t.Helper()
	cps, err := dom.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cp := range cps {
		got = append(got, cp.Name)
	}
	if strings.Join(sorted(got), ",") != strings.Join(want, ",") {
		t.Fatalf("checkpoints = %v, want %v", got, want)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}
