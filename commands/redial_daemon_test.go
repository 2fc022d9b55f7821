package commands

import (
	"testing"

	"vbackup/internal/testbed"
)

// backup-begin --wait lives through a libvirtd restart in the middle of its
// push job, as backup does (TestFaultLibvirtdRestarted), and says so: that
// libvirtd went away, and when the connection came back.
func TestBackupBeginWaitRestarted(t *testing.T) {
	// Its own bed: the restart would cut off every other test's
	// connections to a shared one.
	bed := testbed.Private(t)
	open := openOn(bed)
	dom := bed.Domain(t, "vda:qcow2:1G")
	// Slowed down to 64 MiB/s, the push of 512 MiB takes 8 s: libvirtd is
	// back long before.
	bed.Write(t, dom, "vda", 0xaa, 0, 512<<20)
	throttled := throttle(bed, dom, "vda", 64)
	done := make(chan result, 1)
	go func() { done <- vb(t, open, "backup-begin", dom, "--target-dir", bed.Folder(t), "--wait") }()
	if !<-throttled {
		t.Fatalf("the push job never showed to be throttled:\n%+v", <-done)
	}
	before := bed.DaemonPID(t)
	t.Logf("libvirtd was away %s", bed.Restart(t))
	r := <-done
	wantCode(t, r, ExitOK)
	if after := bed.DaemonPID(t); after == before {
		t.Fatalf("libvirtd was not restarted (pid %d)", after)
	}
	wantStderr(t, r, "Reconnected; the job still runs.", "libvirtd went away (", "s later")
}
