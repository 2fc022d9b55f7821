package libvirtconn_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
	"vbackup/virt"
	"vbackup/virt/libvirtconn"
)

// redials records what OnRedial reports.
type redials struct {
	mu  sync.Mutex
	got []virt.Redial
}

func (r *redials) add(rd virt.Redial) { r.mu.Lock(); r.got = append(r.got, rd); r.mu.Unlock() }

func (r *redials) list() []virt.Redial {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]virt.Redial(nil), r.got...)
}

func openRedialing(t *testing.T, bed *testbed.Bed, wait time.Duration) (*libvirtconn.Conn, *redials) {
	t.Helper()
	conn, err := libvirtconn.Open(context.Background(), bed.URI(), libvirtconn.Options{RedialWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var r redials
	conn.OnRedial(r.add)
	return conn, &r
}

// libvirtd restarted: the connection opens itself again, the domain handle
// works on the new connection, event listeners hear of the loss and can
// register again, and events of the new connection reach them.
func TestRedialAfterRestart(t *testing.T) {
	bed := testbed.Private(t)
	name := bed.Domain(t, "vda:qcow2:64M")
	ctx := context.Background()
	conn, r := openRedialing(t, bed, 0)
	d, err := conn.Domain(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := d.Events(lctx)
	if err != nil {
		t.Fatal(err)
	}
	bed.Restart(t)
	select {
	case ev := <-events:
		if ev.Kind != virt.EventDisconnected {
			t.Fatalf("first event after the restart: %+v, want %s", ev, virt.EventDisconnected)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event told of the lost connection")
	}
	st, err := d.State(ctx)
	if err != nil || !st.Active {
		t.Fatalf("State after the restart: %+v, %v", st, err)
	}
	got := r.list()
	if len(got) != 1 || got[0].Err != nil || got[0].Op != "virDomainGetState" {
		t.Fatalf("redials: %+v, want one of virDomainGetState, without error", got)
	}
	if names, err := conn.Domains(ctx, true); err != nil || !strings.Contains(strings.Join(names, " "), name) {
		t.Errorf("Domains after the restart: %v, %v", names, err)
	}

	// Registered again, the listener hears the new connection's events.
	again, err := d.Events(lctx)
	if err != nil {
		t.Fatal(err)
	}
	bed.Virsh(t, "backup-begin", name)
	deadline := time.After(time.Minute)
	for done := false; !done; {
		select {
		case ev := <-again:
			done = ev.Kind == virt.EventJobEnded
		case <-deadline:
			t.Fatal("no job-ended event on the new connection")
		}
	}
	if n := len(r.list()); n != 1 {
		t.Errorf("%d reconnections, want 1", n)
	}
}

// libvirtd gone for longer than the wait: the call fails saying so, with
// ErrConnect, and once libvirtd answers again the next call reconnects.
func TestRedialGivesUp(t *testing.T) {
	bed := testbed.Private(t)
	name := bed.Domain(t, "vda:qcow2:64M")
	ctx := context.Background()
	conn, r := openRedialing(t, bed, 1500*time.Millisecond)
	d, err := conn.Domain(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	stopDaemon(t, bed)
	start := time.Now()
	_, err = d.State(ctx)
	if !errors.Is(err, virt.ErrConnect) || !strings.Contains(err.Error(), "did not answer again within 1.5s") {
		t.Fatalf("State with libvirtd gone: %v, want ErrConnect saying it did not answer again within 1.5s", err)
	}
	if waited := time.Since(start); waited < 1500*time.Millisecond || waited > 10*time.Second {
		t.Errorf("State waited %s for libvirtd, want the 1.5 s asked for", waited)
	}
	if got := r.list(); len(got) != 1 || got[0].Err == nil {
		t.Errorf("redials: %+v, want one that failed", got)
	}
	// The calls after it (a failed backup's cleanup) try once, not a wait
	// each.
	start = time.Now()
	if _, err := d.XML(ctx, false); !errors.Is(err, virt.ErrConnect) || !strings.Contains(err.Error(), "libvirtd is still away") {
		t.Errorf("XML after the reconnection gave up: %v, want ErrConnect saying libvirtd is still away", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("the call after the reconnection gave up waited %s", waited)
	}
	bed.Up(t)
	if st, err := d.State(ctx); err != nil || !st.Active {
		t.Fatalf("State once libvirtd is back: %+v, %v", st, err)
	}
}

// libvirtd gone, and the call's ctx ends (a Ctrl-C) while the call waits
// for it: the call returns at once with the ctx's cause, not after the
// minute's wait.
func TestRedialInterrupted(t *testing.T) {
	bed := testbed.Private(t)
	name := bed.Domain(t, "vda:qcow2:64M")
	conn, r := openRedialing(t, bed, 0)
	d, err := conn.Domain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	stopDaemon(t, bed)
	stop := errors.New("interrupted by SIGINT")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	time.AfterFunc(time.Second, func() { cancel(stop) })
	start := time.Now()
	_, err = d.State(ctx)
	waited := time.Since(start)
	if !errors.Is(err, stop) {
		t.Fatalf("State interrupted while libvirtd is gone: %v, want the ctx's cause, %v", err, stop)
	}
	if waited > 5*time.Second {
		t.Errorf("State returned %s after it began, %s after the interrupt", waited, waited-time.Second)
	}
	if got := r.list(); len(got) != 1 || got[0].Err == nil {
		t.Errorf("redials: %+v, want one that failed", got)
	}
	// Cut short is not given up: the next call, with a ctx of its own,
	// waits for libvirtd and finds it back.
	type state struct {
		st  virt.DomainState
		err error
	}
	next := make(chan state, 1)
	go func() {
		st, err := d.State(context.Background())
		next <- state{st, err}
	}()
	time.Sleep(time.Second)
	bed.Up(t)
	if got := <-next; got.err != nil || !got.st.Active {
		t.Fatalf("State begun while libvirtd was gone, ended once it is back: %+v, %v", got.st, got.err)
	}
}

// stopDaemon stops the bed's libvirtd with SIGTERM and waits for it to be
// gone.
func stopDaemon(t *testing.T, bed *testbed.Bed) {
	t.Helper()
	pid := bed.DaemonPID(t)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		if i > 300 {
			t.Fatalf("libvirtd (pid %d) did not stop", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
