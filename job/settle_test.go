package job

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// notes records what the job code says.
type notes struct{ lines []string }

func (n *notes) Infof(format string, args ...any) {
	n.lines = append(n.lines, fmt.Sprintf(format, args...))
}
func (n *notes) Notef(format string, args ...any) {
	n.lines = append(n.lines, fmt.Sprintf(format, args...))
}
func (n *notes) String() string { return strings.Join(n.lines, "\n") }

func fakeDomain(t *testing.T) (*virtfake.Conn, *virtfake.Domain) {
	t.Helper()
	conn := virtfake.New()
	dir := t.TempDir()
	dom := conn.AddDomain(virtfake.DomainSpec{Name: "vm1", Disks: []virt.Disk{
		{Target: "vda", Device: "disk", Type: "file", Source: filepath.Join(dir, "vda.qcow2"), Format: "qcow2"},
	}})
	return conn, dom
}

const cpXML = "<domaincheckpoint><name>c1</name><disks><disk name='vda' checkpoint='bitmap'/></disks></domaincheckpoint>"

const pushOf = "<domainbackup><disks><disk name='vda' type='file'><target file='/nowhere/vda.qcow2'/><driver type='qcow2'/></disk></disks></domainbackup>"

const pullOf = "<domainbackup mode='pull'><server transport='unix' socket='/nowhere/nbd.sock'/><disks><disk name='vda' type='file'>" +
	"<scratch file='/nowhere/vda.scratch'/><driver type='qcow2'/></disk></disks></domainbackup>"

// begin starts a job with checkpoint c1 under rec, as vbackup does.
func begin(t *testing.T, dom virt.Domain, backupXML string, rec virt.BackupRecord) {
	t.Helper()
	n := &notes{}
	plan := Plan{Pull: strings.Contains(backupXML, "pull"), Checkpoint: "c1", BackupXML: backupXML, CheckpointXML: cpXML}
	if err := Begin(context.Background(), dom, plan, false, rec, n); err != nil {
		t.Fatal(err)
	}
}

func hasCheckpoint(t *testing.T, dom virt.Domain, name string) bool {
	t.Helper()
	cps, err := dom.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(cps, func(c virt.Checkpoint) bool { return c.Name == name })
}

// deadPID is a process id that does not run.
func deadPID(t *testing.T) int {
	for pid := 4000000; pid > 3000000; pid -= 7919 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}

// What an earlier job left is settled: each outcome keeps or deletes the
// checkpoint made with the job, says why, and clears the record.
func TestSettle(t *testing.T) {
	host, _ := os.Hostname()
	cases := []struct {
		name       string
		run        func(t *testing.T, dom *virtfake.Domain) // leaves a job record behind
		kept       bool
		say        string
		leftRecord bool
	}{
		{name: "push failed", kept: false, say: "did not complete (I/O error)", run: func(t *testing.T, dom *virtfake.Domain) {
			dom.HoldPush(true)
			begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
			dom.EndJob(false, "I/O error")
		}},
		{name: "push completed", kept: true, run: func(t *testing.T, dom *virtfake.Domain) {
			dom.HoldPush(true)
			begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
			dom.EndJob(true, "")
		}},
		{name: "pull ended outside vbackup", kept: true, say: "was ended outside vbackup; checkpoint c1 is kept", run: func(t *testing.T, dom *virtfake.Domain) {
			begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now()})
			if err := dom.AbortJob(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "being discarded when vbackup stopped", kept: false, say: "was being ended before it finished", run: func(t *testing.T, dom *virtfake.Domain) {
			begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(), Discard: true})
			if err := dom.AbortJob(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		// 'vbackup backup' died while reading the job: the job is ended.
		{name: "backup process gone, job running", kept: false, say: "lost its vbackup process", run: func(t *testing.T, dom *virtfake.Domain) {
			begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(), Dir: t.TempDir(), Host: host, PID: deadPID(t)})
		}},
		// Its manifest names the checkpoint: it holds what it claims.
		{name: "backup committed", kept: true, run: func(t *testing.T, dom *virtfake.Domain) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "c1"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "c1", chain.ManifestFile), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(), Dir: dir, Host: host, PID: deadPID(t)})
			if err := dom.AbortJob(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		// Its process still runs (checksumming, committing): left alone.
		{name: "backup still finishing", kept: true, leftRecord: true, run: func(t *testing.T, dom *virtfake.Domain) {
			begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(), Dir: t.TempDir(), Host: host, PID: os.Getpid()})
			if err := dom.AbortJob(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, dom := fakeDomain(t)
			c.run(t, dom)
			n := &notes{}
			if err := Settle(context.Background(), dom, n); err != nil {
				t.Fatal(err)
			}
			if got := hasCheckpoint(t, dom, "c1"); got != c.kept {
				t.Errorf("checkpoint c1 kept: %v, want %v (notes: %s)", got, c.kept, n)
			}
			if c.say != "" && !strings.Contains(n.String(), c.say) {
				t.Errorf("notes %q lack %q", n, c.say)
			}
			if !c.kept && !strings.Contains(n.String(), "Checkpoint c1 deleted") {
				t.Errorf("the deletion is not reported: %q", n)
			}
			if _, ok, _ := dom.BackupRecord(context.Background()); ok != c.leftRecord {
				t.Errorf("record left: %v, want %v", ok, c.leftRecord)
			}
			if st, _ := dom.Job(context.Background(), false); st.State == virt.JobRunning {
				t.Error("a job still runs")
			}
		})
	}
}

// A new job cannot start beside a running one, nor while a 'vbackup
// backup' is still finishing.
func TestReady(t *testing.T) {
	_, dom := fakeDomain(t)
	if err := Ready(context.Background(), dom, &notes{}); err != nil {
		t.Fatalf("an idle domain: %v", err)
	}
	begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now()})
	err := Ready(context.Background(), dom, &notes{})
	if err == nil || !strings.Contains(err.Error(), "already has a job running") || !strings.Contains(err.Error(), "vbackup backup-end vm1") {
		t.Errorf("with a job running: %v", err)
	}
	if err := dom.AbortJob(context.Background()); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if err := dom.SetBackupRecord(context.Background(), virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(),
		Dir: t.TempDir(), Host: host, PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	err = Ready(context.Background(), dom, &notes{})
	if err == nil || !strings.Contains(err.Error(), "is still finishing; wait for it") {
		t.Errorf("while a backup finishes: %v", err)
	}
}

// A job that does not start leaves no checkpoint and no record.
func TestBeginFails(t *testing.T) {
	conn, dom := fakeDomain(t)
	conn.FailNext("BeginBackup", &virt.Error{Op: "virDomainBackupBegin", Kind: virt.ErrInvalidArg, Msg: "invalid argument: bad"})
	n := &notes{}
	err := Begin(context.Background(), dom, Plan{Checkpoint: "c1", BackupXML: pushOf, CheckpointXML: cpXML}, false, virt.BackupRecord{Checkpoint: "c1"}, n)
	if err == nil || !strings.Contains(err.Error(), "the backup did not start: invalid argument: bad") {
		t.Fatalf("err = %v", err)
	}
	if hasCheckpoint(t, dom, "c1") {
		t.Error("the checkpoint of a job that did not start is left")
	}
	if _, ok, _ := dom.BackupRecord(context.Background()); ok {
		t.Error("the record of a job that did not start is left")
	}
}
