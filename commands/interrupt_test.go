package commands

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// signalledEnv is an Env whose Ctrl-C comes from the test.
func signalledEnv(t *testing.T) (*Env, chan os.Signal, func() string) {
	t.Helper()
	env, _, stderr := testEnv(nil, nil)
	sigs := make(chan os.Signal, 1)
	env.Signals = func() (<-chan os.Signal, func()) { return sigs, func() {} }
	out := &syncBuffer{b: stderr}
	env.Stderr = out
	return env, sigs, out.String
}

// backupInterrupts is what 'vbackup backup' says on a signal.
var backupInterrupts = interruptText{
	ending:     "ending the backup; nothing of it will be kept",
	committing: "the backup is complete and being put in place; it is kept unless that fails",
}

// syncBuffer is a buffer the signal handler's goroutine writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until cond holds, for what a signal handler prints.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Ctrl-C before the commit ends the run and says nothing is kept; the
// commit then does not begin.
func TestInterruptBeforeCommit(t *testing.T) {
	env, sigs, stderr := signalledEnv(t)
	ctx, intr := interruptible(context.Background(), env, backupInterrupts)
	defer intr.stop()
	sigs <- syscall.SIGINT
	waitFor(t, "the run to end", func() bool { return ctx.Err() != nil })
	if !strings.Contains(stderr(), "nothing of it will be kept") {
		t.Errorf("stderr %q does not say that nothing is kept", stderr())
	}
	err := intr.committing()
	if err == nil || !strings.Contains(err.Error(), "interrupted by SIGINT") {
		t.Errorf("committing after Ctrl-C: %v; want the interruption", err)
	}
	if !errors.Is(context.Cause(ctx), ErrInterrupted) || !errors.Is(err, ErrInterrupted) {
		t.Errorf("the run ends with cause %v; want ErrInterrupted (exit 130)", context.Cause(ctx))
	}
}

// Ctrl-C while the backup is being put in place leaves it to finish and
// says it is kept; a second one still leaves at once.
func TestInterruptWhileCommitting(t *testing.T) {
	env, sigs, stderr := signalledEnv(t)
	exited := make(chan int, 1)
	env.Exit = func(code int) { exited <- code }
	ctx, intr := interruptible(context.Background(), env, backupInterrupts)
	defer intr.stop()
	if err := intr.committing(); err != nil {
		t.Fatal(err)
	}
	sigs <- syscall.SIGTERM
	waitFor(t, "the message", func() bool { return strings.Contains(stderr(), "it is kept unless that fails") })
	if ctx.Err() != nil {
		t.Fatal("Ctrl-C during the commit ended the run")
	}
	if strings.Contains(stderr(), "nothing of it will be kept") {
		t.Errorf("stderr %q says nothing is kept", stderr())
	}
	sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != ExitFailure {
			t.Errorf("exit code %d; want %d", code, ExitFailure)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal did not leave")
	}
}
