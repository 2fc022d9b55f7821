package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// bed is a fake libvirt with one running domain vm1 (vda qcow2, vdb raw).
type bed struct {
	conn  *virtfake.Conn
	dom   *virtfake.Domain
	notes *lines
	dir   string
}

func newBed(t *testing.T) bed {
	t.Helper()
	conn := virtfake.New()
	images := t.TempDir()
	dom := conn.AddDomain(virtfake.DomainSpec{Name: "vm1", Disks: []virt.Disk{
		{Target: "vda", Device: "disk", Type: "file", Source: filepath.Join(images, "vda.qcow2"), Format: "qcow2"},
		{Target: "vdb", Device: "disk", Type: "file", Source: filepath.Join(images, "vdb.raw"), Format: "raw"},
	}})
	return bed{conn: conn, dom: dom, notes: &lines{}, dir: filepath.Join(t.TempDir(), "backups")}
}

func (b bed) request(t *testing.T) BackupRequest {
	return BackupRequest{Dir: b.dir, Level: chain.WantAuto, Now: time.Now, Host: "test-host", PID: os.Getpid(),
		Sockets: job.Sockets{Base: t.TempDir()}}
}

// lines records what the engine says, kind by kind.
type lines struct{ info, note []string }

func (l *lines) Infof(format string, args ...any) { l.info = append(l.info, sprintf(format, args...)) }
func (l *lines) Notef(format string, args ...any) { l.note = append(l.note, sprintf(format, args...)) }

func (l *lines) all() string {
	return strings.Join(append(append([]string(nil), l.info...), l.note...), "\n")
}

func checkpoints(t *testing.T, dom virt.Domain) []string {
	t.Helper()
	cps, err := dom.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cp := range cps {
		names = append(names, cp.Name)
	}
	return names
}

// folderAsItWas fails unless dir is absent or holds nothing but the lock.
func folderAsItWas(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ".vbackup.lock" {
			t.Errorf("%s holds %s after a failed backup", dir, e.Name())
		}
	}
}

func noRecord(t *testing.T, dom virt.Domain) {
	t.Helper()
	if rec, ok, err := dom.BackupRecord(context.Background()); err != nil || ok {
		t.Errorf("a job record is left: %+v, %v", rec, err)
	}
}

func noJob(t *testing.T, dom virt.Domain) {
	t.Helper()
	if st, err := dom.Job(context.Background(), false); err != nil || st.State == virt.JobRunning {
		t.Errorf("a job is left: %+v, %v", st, err)
	}
}

func never() error { return nil }

// Preparing a backup of a shut-off domain whose image is missing fails,
// naming the disk and the file, and changes nothing.
func TestPrepareStoppedDomainMissingImage(t *testing.T) {
	b := newBed(t)
	b.dom.Stop()
	_, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err == nil || !strings.Contains(err.Error(), "disk vda: qemu-img info") || !strings.Contains(err.Error(), "No such file or directory") {
		t.Fatalf("PrepareBackup of a stopped domain without its images: %v", err)
	}
	if _, err := os.Stat(b.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder was made: %v", err)
	}
}

// Preparing decides and names the backup, and leaves libvirt and the folder
// as they were: no job, no checkpoint, no folder.
func TestPrepareChangesNothing(t *testing.T) {
	b := newBed(t)
	p, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if !strings.HasPrefix(p.Name(), "vbackup-") || p.Decision().Level != chain.Full {
		t.Errorf("prepared %q at level %q; want vbackup-<time>, full", p.Name(), p.Decision().Level)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after preparing: %v", got)
	}
	for _, call := range b.conn.Calls() {
		if call == "BeginBackup" || call == "CreateCheckpoint" || call == "SetBackupRecord" {
			t.Errorf("preparing called %s", call)
		}
	}
	if _, err := os.Stat(b.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("preparing made the folder: %v", err)
	}
}

// An unknown --disk is refused with the disks the domain has.
func TestPrepareUnknownDisk(t *testing.T) {
	b := newBed(t)
	req := b.request(t)
	req.Disks = []string{"vdz"}
	_, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err == nil || err.Error() != `domain "vm1" has no disk "vdz"; its disks are vda, vdb` {
		t.Fatalf("err = %v", err)
	}
}

// A job that does not start leaves no checkpoint, no record, and the
// folder as it was.
func TestRunBeginFails(t *testing.T) {
	b := newBed(t)
	p, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b.conn.FailNext("BeginBackup", &virt.Error{Op: "virDomainBackupBegin", Kind: virt.ErrOperationInvalid, Msg: "Requested operation is not valid: domain is not running"})
	_, err = p.Run(context.Background(), progress.NewQuiet(), never)
	if err == nil || !strings.Contains(err.Error(), "the backup did not start") || !strings.Contains(err.Error(), "is as it was") {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, virt.ErrOperationInvalid) {
		t.Errorf("the error lost its cause: %v", err)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after a job that did not start: %v", got)
	}
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)
}

// A pull whose exports cannot be read: the job is ended, its checkpoint
// (made when the job began) deleted, its record cleared, and the folder
// left as it was.
func TestRunPullFetchFails(t *testing.T) {
	b := newBed(t)
	p, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Run(context.Background(), progress.NewQuiet(), never)
	if err == nil || !strings.Contains(err.Error(), "reading the exports") || !strings.Contains(err.Error(), "is as it was") {
		t.Fatalf("err = %v", err)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after a failed pull: %v; the job's would claim data never saved", got)
	}
	if !slices.Contains(b.conn.Calls(), "AbortJob") {
		t.Errorf("the pull job was not ended: calls %v", b.conn.Calls())
	}
	if !strings.Contains(b.notes.all(), "it would have claimed data that was not saved") {
		t.Errorf("the deleted checkpoint is not reported:\n%s", b.notes.all())
	}
	noJob(t, b.dom)
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)
}

// A run whose context ends while libvirt pushes (Ctrl-C): the job is
// stopped, its checkpoint deleted, and the error carries the cause.
func TestRunPushCancelled(t *testing.T) {
	b := newBed(t)
	b.dom.HoldPush(true)
	req := b.request(t)
	req.Push = true
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if st, err := b.dom.Job(context.Background(), false); err == nil && st.State == virt.JobRunning {
				break
			}
		}
		cancel(stop)
	}()
	_, err = p.Run(ctx, progress.NewQuiet(), never)
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v; want it to wrap the cause", err)
	}
	if !slices.Contains(b.conn.Calls(), "BeginBackup") || !slices.Contains(b.conn.Calls(), "AbortJob") {
		t.Errorf("the push was not begun and then stopped: calls %v", b.conn.Calls())
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after a cancelled push: %v", got)
	}
	noJob(t, b.dom)
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)
}

// When the commit is refused (a Ctrl-C came first), nothing is kept.
func TestRunCommitRefused(t *testing.T) {
	b := newBed(t)
	b.dom.OnPushComplete(func(disk, target string) error { return writeQcow2(target) })
	req := b.request(t)
	req.Push = true
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := errors.New("interrupted by SIGTERM")
	_, err = p.Run(context.Background(), progress.NewQuiet(), func() error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v; want the refusal", err)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after a refused commit: %v", got)
	}
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// writeQcow2 makes the image a push would have written: an empty qcow2 of
// 1 MiB (what libvirt writes needs qemu-img to read back).
func writeQcow2(path string) error {
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "1M").CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	return nil
}

// A pull whose context has ended (Ctrl-C before the exports are read): the
// error carries the cause, for the exit status, and the run is undone.
func TestRunPullCancelled(t *testing.T) {
	b := newBed(t)
	p, err := PrepareBackup(context.Background(), b.dom, b.request(t), b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(stop)
	_, err = p.Run(ctx, progress.NewQuiet(), never)
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "is as it was") {
		t.Fatalf("err = %v; want it to wrap the cause", err)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("checkpoints after a cancelled pull: %v", got)
	}
	noJob(t, b.dom)
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)
}
