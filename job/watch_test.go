package job

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"vbackup/progress"
	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// recorder is a progress printer that keeps the result.
type recorder struct {
	samples int
	result  *progress.Result
}

func (r *recorder) Update(progress.Sample)   { r.samples++ }
func (r *recorder) Finish(x progress.Result) { r.result = &x }

func watch(ctx context.Context, dom virt.Domain, opts WatchOptions) (error, *recorder, *notes) {
	r, n := &recorder{}, &notes{}
	opts.Printer, opts.Notes, opts.Interval = r, n, time.Millisecond
	return Watch(ctx, dom, opts), r, n
}

// waitRunning waits until the fake's job is running, then calls then.
func waitRunning(t *testing.T, dom *virtfake.Domain, then func()) {
	go func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if st, err := dom.Job(context.Background(), false); err == nil && st.State == virt.JobRunning {
				break
			}
		}
		then()
	}()
}

func TestWatchCompleted(t *testing.T) {
	_, dom := fakeDomain(t)
	dom.HoldPush(true)
	begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
	dom.SetProgress("vda", 10, 100)
	waitRunning(t, dom, func() { time.Sleep(20 * time.Millisecond); dom.EndJob(true, "") })
	err, r, _ := watch(context.Background(), dom, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.result == nil || r.result.State != progress.JobCompleted || r.samples == 0 {
		t.Fatalf("result %+v after %d samples", r.result, r.samples)
	}
	if !hasCheckpoint(t, dom, "c1") {
		t.Error("a completed push lost its checkpoint")
	}
	if _, ok, _ := dom.BackupRecord(context.Background()); ok {
		t.Error("a completed push kept its record")
	}
}

// A push that fails: the watcher says so, and its checkpoint goes.
func TestWatchFailed(t *testing.T) {
	_, dom := fakeDomain(t)
	dom.HoldPush(true)
	begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
	waitRunning(t, dom, func() { dom.EndJob(false, "No space left on device") })
	err, r, n := watch(context.Background(), dom, WatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "the backup job failed: No space left on device") {
		t.Fatalf("err = %v", err)
	}
	if r.result == nil || r.result.State != progress.JobFailed {
		t.Errorf("result %+v", r.result)
	}
	if hasCheckpoint(t, dom, "c1") {
		t.Errorf("the failed push's checkpoint is left (notes: %s)", n)
	}
}

// A cancelled context stops the job and discards its checkpoint; the error
// carries the cause.
func TestWatchCancelled(t *testing.T) {
	_, dom := fakeDomain(t)
	begin(t, dom, pullOf, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now()})
	cause := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	waitRunning(t, dom, func() { time.Sleep(20 * time.Millisecond); cancel(cause) })
	err, r, n := watch(ctx, dom, WatchOptions{})
	if !errors.Is(err, cause) {
		t.Fatalf("err = %v; want the cause", err)
	}
	if !strings.Contains(n.String(), "interrupted by SIGINT: ending the backup job of domain vm1") {
		t.Errorf("notes: %s", n)
	}
	if r.result == nil || r.result.State != progress.JobCancelled {
		t.Errorf("result %+v", r.result)
	}
	if hasCheckpoint(t, dom, "c1") {
		t.Error("the stopped job's checkpoint is left")
	}
	if st, _ := dom.Job(context.Background(), false); st.State == virt.JobRunning {
		t.Error("the job still runs")
	}
}

func TestWatchTimeout(t *testing.T) {
	_, dom := fakeDomain(t)
	dom.HoldPush(true)
	begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
	err, _, _ := watch(context.Background(), dom, WatchOptions{Timeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("err = %v", err)
	}
	if hasCheckpoint(t, dom, "c1") {
		t.Error("the timed-out job's checkpoint is left")
	}
}

// The connection is lost and comes back while the job runs: watching goes
// on to the end.
func TestWatchReconnects(t *testing.T) {
	conn, dom := fakeDomain(t)
	dom.HoldPush(true)
	begin(t, dom, pushOf, virt.BackupRecord{Checkpoint: "c1", Started: time.Now()})
	waitRunning(t, dom, func() {
		time.Sleep(20 * time.Millisecond)
		conn.Disconnect()
		time.Sleep(20 * time.Millisecond)
		conn.Reconnect()
		time.Sleep(20 * time.Millisecond)
		dom.EndJob(true, "")
	})
	err, r, n := watch(context.Background(), dom, WatchOptions{Reconnect: func(context.Context) (virt.Conn, error) { return conn, nil }})
	if err != nil {
		t.Fatalf("err = %v (notes: %s)", err, n)
	}
	if r.result == nil || r.result.State != progress.JobCompleted {
		t.Errorf("result %+v", r.result)
	}
	if !strings.Contains(n.String(), "The connection to libvirtd was lost; reconnecting") {
		t.Errorf("notes: %s", n)
	}
}
