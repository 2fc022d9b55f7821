package testbed

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Private starts a bed of t's own, stopped with t: for a test that restarts
// libvirtd, which would cut off every other test using the shared bed.
func Private(t testing.TB) *Bed {
	t.Helper()
	b, err := start()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if err := b.down(); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	return b
}

// Restart stops the bed's libvirtd with SIGTERM, as a package upgrade's
// restart does, and starts it again; the domains' QEMUs go on running. It
// returns how long libvirtd was away.
func (b *Bed) Restart(t testing.TB) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	out, err := b.run(ctx, "restart", b.dir)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("testbed: restart printed %q, not seconds", out)
	}
	return time.Duration(secs * float64(time.Second))
}

// DaemonPID is the pid of the bed's libvirtd.
func (b *Bed) DaemonPID(t testing.TB) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.dir, "run", "libvirtd.pid"))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("testbed: libvirtd's pid file holds %q", raw)
	}
	return pid
}

// QEMUPID is the pid of the running domain's QEMU process.
func (b *Bed) QEMUPID(t testing.TB, domain string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := b.run(ctx, "qemu-pid", b.dir, domain)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("testbed: qemu-pid printed %q", out)
	}
	return pid
}

// Up starts the bed's libvirtd again after a test stopped it (testbed.sh
// up, which does nothing if it answers).
func (b *Bed) Up(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	if _, err := b.run(ctx, "up", b.dir); err != nil {
		t.Fatalf("testbed: %v", err)
	}
}
