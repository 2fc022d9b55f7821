package commands

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/virt"
	"vbackup/virt/virtfake"
)

// Ctrl-C while backup-begin has the guest frozen: the thaw comes first,
// then vbackup says that the job started and runs, and exits 130.
func TestBackupBeginCtrlCWhileFrozen(t *testing.T) {
	conn := virtfake.New()
	dom := conn.AddDomain(virtfake.DomainSpec{Name: "vm1", Agent: true, Disks: []virt.Disk{{Target: "vda"}}})
	open := func(context.Context, string, io.Writer) (virt.Conn, error) { return conn, nil }
	env, stdout, stderr := testEnv(open, nil)
	sigs := make(chan os.Signal)
	env.Signals = func() (<-chan os.Signal, func()) { return sigs, func() {} }
	dom.OnFreeze(func(ctx context.Context) {
		select {
		case sigs <- os.Interrupt:
			// Until the handler has cancelled the run, however slow the
			// machine.
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Second):
			}
		case <-time.After(30 * time.Second): // nobody listens: the signal would kill vbackup
		}
	})
	code := Main(context.Background(), []string{"vbackup", "backup-begin", "vm1", "--target-dir", t.TempDir()}, env)
	if code != ExitInterrupted {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, ExitInterrupted, stdout, stderr)
	}
	if dom.Frozen() {
		t.Error("the guest is left frozen")
	}
	var calls []string
	for _, c := range conn.Calls() {
		if c == "FreezeFS" || c == "BeginBackup" || c == "ThawFS" {
			calls = append(calls, c)
		}
	}
	if want := []string{"FreezeFS", "BeginBackup", "ThawFS"}; !slices.Equal(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	for _, w := range []string{"Guest filesystems of vm1 frozen for ", "The job runs: 'vbackup backup-end vm1' ends it"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("stdout lacks %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stderr.String(), "thawing the guest's filesystems first") {
		t.Errorf("stderr does not say what Ctrl-C does:\n%s", stderr)
	}
}
