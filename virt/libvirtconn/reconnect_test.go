package libvirtconn

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A Conn whose libvirtd is gone and stays gone: every dial fails, as
// libvirt's does with the daemon's socket unanswered.
func awayConn(dials *atomic.Int32) *Conn {
	c := &Conn{redial: newRedialing("", time.Minute)}
	c.redial.dial = func() error {
		dials.Add(1)
		return errors.New("Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory")
	}
	return c
}

var (
	errLost = errors.New("End of file while reading data: Input/output error")
	errStop = errors.New("interrupted by SIGINT")
)

// A Ctrl-C while a call waits for libvirtd to come back ends the wait at
// once, with the interrupt as the call's error, rather than a minute later;
// and it is not taken for a wait in vain: the cleanup that follows, with a
// ctx of its own, waits for libvirtd again.
func TestReconnectCancelled(t *testing.T) {
	var dials atomic.Int32
	c := awayConn(&dials)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	time.AfterFunc(500*time.Millisecond, func() { cancel(errStop) })
	start := time.Now()
	err := c.reconnect(ctx, "virDomainGetState", errLost, 0)
	waited := time.Since(start)
	if !errors.Is(err, errStop) {
		t.Fatalf("reconnect cancelled: %v, want the ctx's cause, %v", err, errStop)
	}
	if !strings.Contains(err.Error(), "libvirtd went away (End of file") {
		t.Errorf("reconnect cancelled: %q does not say libvirtd went away", err)
	}
	if waited < 400*time.Millisecond || waited > 3*time.Second {
		t.Errorf("reconnect waited %s, want about the 0.5 s until the cancel", waited)
	}
	if n := dials.Load(); n < 2 {
		t.Errorf("%d dials before the cancel, want it to have tried again meanwhile", n)
	}
	if c.redial.gaveUp {
		t.Error("a cancelled wait counts as one that gave up: the cleanup after it would not wait")
	}
}

// A call waiting for its turn, while another call reconnects, also leaves
// when its ctx ends.
func TestReconnectCancelledWaitingForTurn(t *testing.T) {
	var dials atomic.Int32
	c := awayConn(&dials)
	c.redial.turn <- struct{}{} // the other call, reconnecting
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	time.AfterFunc(200*time.Millisecond, func() { cancel(errStop) })
	start := time.Now()
	err := c.reconnect(ctx, "virDomainGetState", errLost, 0)
	if !errors.Is(err, errStop) {
		t.Fatalf("reconnect cancelled waiting for its turn: %v, want %v", err, errStop)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Errorf("reconnect waited %s for its turn after the cancel", waited)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials without the turn", n)
	}
}
