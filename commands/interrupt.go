package commands

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrInterrupted is the cause of a command ended by Ctrl-C or SIGTERM:
// Main exits 130 for it, the shell's code for a command killed by SIGINT,
// once the command has cleaned up after itself.
var ErrInterrupted = errors.New("interrupted")

type interruptedBy struct{ sig os.Signal }

func (e interruptedBy) Error() string        { return "interrupted by " + signalName(e.sig) }
func (e interruptedBy) Is(target error) bool { return target == ErrInterrupted }

// interruptText is what a command says when a signal comes.
type interruptText struct {
	ending     string // first signal: what is undone, "" when the command says it itself
	committing string // first signal while the result is being put in place
	again      string // second signal: what may be left behind
}

// interrupt is the one Ctrl-C handler: the first signal ends the
// command's context with ErrInterrupted as its cause, unless the command
// is committing its result; a second one leaves at once, with status 1:
// the command did not clean up.
type interrupt struct {
	env    *Env
	text   interruptText
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu          sync.Mutex // orders committing with a signal that ends the run
	commit      bool
	interrupted error
}

// interruptible returns ctx ended by the first Ctrl-C or SIGTERM, and the
// handler; stop releases the signals.
func interruptible(ctx context.Context, env *Env, text interruptText) (context.Context, *interrupt) {
	ctx, cancel := context.WithCancelCause(ctx)
	i := &interrupt{env: env, text: text, cancel: cancel, done: make(chan struct{})}
	sigs, stopSigs := env.Signals()
	go func() {
		defer stopSigs()
		for {
			select {
			case <-i.done:
				return
			case s := <-sigs:
				if i.signal(s) {
					return
				}
			}
		}
	}()
	return ctx, i
}

// signal handles one signal; it reports whether the process is leaving.
func (i *interrupt) signal(s os.Signal) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.interrupted != nil {
		msg := "\nInterrupted again: leaving now."
		if i.text.again != "" {
			msg += " " + i.text.again
		}
		fmt.Fprintln(i.env.Stderr, msg)
		i.env.Exit(ExitFailure)
		return true
	}
	if i.commit {
		// Its work is done: ending it now would throw away a good result
		// to save a second.
		fmt.Fprintf(i.env.Stderr, "\n%s: %s (again to leave at once)\n", signalName(s), i.text.committing)
		i.interrupted = interruptedBy{s} // the next one leaves
		return false
	}
	if i.text.ending != "" {
		fmt.Fprintf(i.env.Stderr, "\n%s: %s (again to leave at once)\n", signalName(s), i.text.ending)
	}
	i.interrupted = interruptedBy{s}
	i.cancel(i.interrupted)
	return false
}

// committing marks the command as putting its result in place, from when
// a signal no longer ends it, unless a signal has ended it already.
func (i *interrupt) committing() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.interrupted != nil {
		return i.interrupted
	}
	i.commit = true
	return nil
}

// stop releases the signals.
func (i *interrupt) stop() {
	close(i.done)
	i.cancel(nil)
}

// signalName is "SIGINT" rather than Go's "interrupt".
func signalName(s os.Signal) string {
	if n, ok := s.(syscall.Signal); ok {
		if name := unix.SignalName(n); name != "" {
			return name
		}
	}
	return s.String()
}

// wrap gives err the interruption as its cause, when a signal ended the
// command and err does not say so already: what the lower layers met is
// often only a cancelled context, and the exit status is 130 only for a
// command that was interrupted.
func (i *interrupt) wrap(err error) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err == nil || i.interrupted == nil || i.commit || errors.Is(err, ErrInterrupted) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, i.interrupted)
}
