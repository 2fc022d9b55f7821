package engine

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"vbackup/job"
	"vbackup/progress"
	"vbackup/virt"
)

// agentCalls are the calls of the freeze's story, in order.
func agentCalls(b bed) []string {
	var out []string
	for _, c := range b.conn.Calls() {
		switch c {
		case "PingAgent", "FreezeFS", "BeginBackup", "ThawFS":
			out = append(out, c)
		}
	}
	return out
}

func quiesceRun(t *testing.T, b bed, q job.Quiesce, ctx context.Context) error {
	t.Helper()
	req := b.request(t)
	req.Quiesce = q
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Run(ctx, progress.NewQuiet(), never)
	return err
}

// With an agent that answers, the guest is frozen just before the job
// begins and thawed right after, and the time frozen is told. (The fake's
// pull exports cannot be read: the run fails later, past the thaw.)
func TestQuiesceFreezesAroundBegin(t *testing.T) {
	for _, q := range []job.Quiesce{job.QuiesceAuto, job.QuiesceYes} {
		t.Run(string(q), func(t *testing.T) {
			b := newBed(t)
			b.dom.SetAgent(true)
			frozenAtBegin := false
			b.dom.OnFreeze(func(context.Context) { frozenAtBegin = b.dom.Frozen() })
			_ = quiesceRun(t, b, q, context.Background())
			if got, want := agentCalls(b), []string{"PingAgent", "FreezeFS", "BeginBackup", "ThawFS"}; !slices.Equal(got, want) {
				t.Errorf("calls %v, want %v", got, want)
			}
			if !frozenAtBegin || b.dom.Frozen() {
				t.Errorf("frozen after FreezeFS: %v; frozen at the end: %v; want true, false", frozenAtBegin, b.dom.Frozen())
			}
			all := b.notes.all()
			for _, w := range []string{"The guest agent of vm1 answers: its filesystems are frozen while the backup job starts", "Guest filesystems of vm1 frozen for "} {
				if !strings.Contains(all, w) {
					t.Errorf("the output lacks %q:\n%s", w, all)
				}
			}
		})
	}
}

// The thaw happens when the job fails to start, and when the user
// interrupts (ctx cancelled) while the guest is frozen.
func TestQuiesceThawsWhateverHappens(t *testing.T) {
	t.Run("begin fails", func(t *testing.T) {
		b := newBed(t)
		b.dom.SetAgent(true)
		b.conn.FailNext("BeginBackup", &virt.Error{Op: "virDomainBackupBegin", Kind: virt.ErrOperationInvalid, Msg: "Requested operation is not valid: domain is not running"})
		err := quiesceRun(t, b, job.QuiesceYes, context.Background())
		if err == nil || !strings.Contains(err.Error(), "the backup did not start") {
			t.Fatalf("err = %v", err)
		}
		if got, want := agentCalls(b), []string{"PingAgent", "FreezeFS", "BeginBackup", "ThawFS"}; !slices.Equal(got, want) {
			t.Errorf("calls %v, want %v", got, want)
		}
		if b.dom.Frozen() {
			t.Error("the guest is left frozen")
		}
		if got := checkpoints(t, b.dom); len(got) != 0 {
			t.Errorf("checkpoints: %v", got)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		b := newBed(t)
		b.dom.SetAgent(true)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.dom.OnFreeze(func(context.Context) { cancel() }) // Ctrl-C while frozen
		err := quiesceRun(t, b, job.QuiesceAuto, ctx)
		if err == nil {
			t.Fatal("an interrupted backup succeeded")
		}
		if got, want := agentCalls(b), []string{"PingAgent", "FreezeFS", "BeginBackup", "ThawFS"}; !slices.Equal(got, want) {
			t.Errorf("calls %v, want %v", got, want)
		}
		if b.dom.Frozen() {
			t.Error("the guest is left frozen")
		}
	})
	t.Run("first thaw fails", func(t *testing.T) {
		b := newBed(t)
		b.dom.SetAgent(true)
		b.conn.FailNext("ThawFS", errors.New("agent hiccup"))
		_ = quiesceRun(t, b, job.QuiesceAuto, context.Background())
		if b.dom.Frozen() {
			t.Errorf("the guest is left frozen after one failed thaw:\n%s", b.notes.all())
		}
	})
}

// --quiesce yes without an agent fails before anything changes.
func TestQuiesceYesWithoutAgent(t *testing.T) {
	b := newBed(t)
	req := b.request(t)
	req.Quiesce = job.QuiesceYes
	_, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err == nil || !errors.Is(err, virt.ErrNoAgent) || !strings.Contains(err.Error(), "--quiesce yes, but no guest agent answers") ||
		!strings.Contains(err.Error(), "QEMU guest agent is not configured") {
		t.Fatalf("err = %v", err)
	}
	for _, c := range b.conn.Calls() {
		if c == "SetBackupRecord" || c == "BeginBackup" || c == "CreateCheckpoint" || c == "FreezeFS" {
			t.Errorf("called %s", c)
		}
	}
	if _, err := os.Stat(b.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder was made: %v", err)
	}
}

// auto without an agent goes on unfrozen and says so; no never asks.
func TestQuiesceAutoAndNoWithoutFreeze(t *testing.T) {
	b := newBed(t)
	_ = quiesceRun(t, b, job.QuiesceAuto, context.Background())
	if got, want := agentCalls(b), []string{"PingAgent", "BeginBackup"}; !slices.Equal(got, want) {
		t.Errorf("auto, no agent: calls %v, want %v", got, want)
	}
	if all := b.notes.all(); !strings.Contains(all, "No guest agent answers in vm1 (argument unsupported: QEMU guest agent is not configured): the backup holds the disks as after a power cut") {
		t.Errorf("auto does not say that no agent answered:\n%s", all)
	}

	b = newBed(t)
	b.dom.SetAgent(true)
	_ = quiesceRun(t, b, job.QuiesceNo, context.Background())
	if got, want := agentCalls(b), []string{"BeginBackup"}; !slices.Equal(got, want) {
		t.Errorf("no: calls %v, want %v", got, want)
	}
	if all := b.notes.all(); strings.Contains(all, "agent") {
		t.Errorf("--quiesce no talks of the agent:\n%s", all)
	}
}

// A freeze that fails: yes fails the start, leaving nothing; auto starts
// the job unfrozen, with a warning. Either way a thaw is tried at once: a
// freeze libvirt gave up on may still complete in the guest.
func TestQuiesceFreezeFails(t *testing.T) {
	freezeErr := &virt.Error{Op: "virDomainFSFreeze", Msg: "internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': fsfreeze failed"}
	b := newBed(t)
	b.dom.SetAgent(true)
	b.conn.FailNext("FreezeFS", freezeErr)
	err := quiesceRun(t, b, job.QuiesceYes, context.Background())
	if err == nil || !strings.Contains(err.Error(), "--quiesce yes: freezing the guest's filesystems failed: internal error") {
		t.Fatalf("yes: err = %v", err)
	}
	if got, want := agentCalls(b), []string{"PingAgent", "FreezeFS", "ThawFS"}; !slices.Equal(got, want) {
		t.Errorf("yes: calls %v, want %v", got, want)
	}
	if got := checkpoints(t, b.dom); len(got) != 0 {
		t.Errorf("yes: checkpoints: %v", got)
	}
	noRecord(t, b.dom)
	folderAsItWas(t, b.dir)

	b = newBed(t)
	b.dom.SetAgent(true)
	b.conn.FailNext("FreezeFS", freezeErr)
	_ = quiesceRun(t, b, job.QuiesceAuto, context.Background())
	if got, want := agentCalls(b), []string{"PingAgent", "FreezeFS", "ThawFS", "BeginBackup"}; !slices.Equal(got, want) {
		t.Errorf("auto: calls %v, want %v", got, want)
	}
	if all := b.notes.all(); !strings.Contains(all, "warning: domain vm1: freezing the guest's filesystems failed") {
		t.Errorf("auto: no warning:\n%s", all)
	}
}
