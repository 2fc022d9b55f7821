package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	"vbackup/progress"
	"vbackup/virt"
)

// Quiesce is whether a job's start freezes the guest's filesystems through
// its QEMU guest agent, so that the backup holds them clean (their journals
// flushed) rather than as after a power cut. libvirt 9.0 refuses to quiesce
// a checkpoint made with a backup job, so vbackup freezes the guest itself
// around BackupBegin: the job's point in time is fixed as it starts.
type Quiesce string

const (
	QuiesceAuto Quiesce = "auto" // freeze when an agent answers
	QuiesceYes  Quiesce = "yes"  // freeze, or refuse to start
	QuiesceNo   Quiesce = "no"   // never freeze
)

// ParseQuiesce reads a --quiesce value.
func ParseQuiesce(s string) (Quiesce, error) {
	switch q := Quiesce(s); q {
	case QuiesceAuto, QuiesceYes, QuiesceNo:
		return q, nil
	}
	return "", fmt.Errorf("--quiesce %q: use auto (freeze the guest's filesystems when its agent answers), yes (freeze or fail) or no", s)
}

// Freeze is what a job's start does about the guest's filesystems, as
// CheckQuiesce decided it; its zero value freezes nothing.
type Freeze struct {
	Freeze   bool
	Required bool   // --quiesce yes: a failed freeze fails the job's start
	Note     string // what was decided and why, for the user
}

// CheckQuiesce decides, before anything changes, whether the job will
// freeze the guest: with QuiesceYes it fails when no agent answers.
func CheckQuiesce(ctx context.Context, dom virt.Domain, q Quiesce) (Freeze, error) {
	if q == QuiesceNo || q == "" {
		return Freeze{}, nil
	}
	err := dom.PingAgent(ctx)
	switch {
	case err == nil:
		return Freeze{Freeze: true, Required: q == QuiesceYes,
			Note: fmt.Sprintf("The guest agent of %s answers: its filesystems are frozen while the backup job starts, so the backup holds them clean.", dom.Name())}, nil
	case !errors.Is(err, virt.ErrNoAgent):
		return Freeze{}, fmt.Errorf("domain %q: asking its guest agent: %w", dom.Name(), err)
	case q == QuiesceYes:
		return Freeze{}, fmt.Errorf("domain %q: --quiesce yes, but no guest agent answers (%w): run qemu-guest-agent in the guest, with a channel named org.qemu.guest_agent.0 in the domain, or use --quiesce auto to back up unfrozen when it does not answer", dom.Name(), err)
	}
	return Freeze{Note: fmt.Sprintf("No guest agent answers in %s (%v): the backup holds the disks as after a power cut (crash-consistent); --quiesce no leaves this note out.", dom.Name(), err)}, nil
}

// freezeAround runs begin with the guest's filesystems frozen, as f says,
// and thaws them as soon as begin returns, whatever it returned, even when
// ctx was cancelled meanwhile; it says how long they were frozen. A freeze
// that fails fails the start when f.Required; otherwise the job starts
// unfrozen, and notes say so.
func freezeAround(ctx context.Context, dom virt.Domain, f Freeze, notes progress.Notifier, begin func() error) error {
	if !f.Freeze {
		return begin()
	}
	start := time.Now()
	if err := dom.FreezeFS(ctx); err != nil {
		// A freeze libvirt gave up on (its agent call timed out) may
		// still complete in the guest: a thaw is always tried, and its
		// own failure (nothing frozen) is of no interest.
		_ = dom.ThawFS(context.WithoutCancel(ctx))
		if f.Required {
			return fmt.Errorf("--quiesce yes: freezing the guest's filesystems failed: %w", err)
		}
		notes.Notef("warning: domain %s: freezing the guest's filesystems failed (%v): the backup is crash-consistent", dom.Name(), err)
		return begin()
	}
	defer func() {
		// The guest must never be left frozen: not on a failure, not on
		// Ctrl-C (a cancelled ctx), not when a first thaw fails.
		ctx := context.WithoutCancel(ctx)
		err := dom.ThawFS(ctx)
		if err != nil {
			err = dom.ThawFS(ctx)
		}
		if err != nil {
			notes.Notef("warning: domain %s: thawing the guest's filesystems failed: %v; the guest may still be frozen: run 'virsh domfsthaw %s'", dom.Name(), err, dom.Name())
			return
		}
		notes.Infof("Guest filesystems of %s frozen for %s, while the backup job started.", dom.Name(), frozenFor(time.Since(start)))
	}()
	return begin()
}

func frozenFor(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
