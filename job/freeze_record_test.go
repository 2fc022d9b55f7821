package job

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"vbackup/virt"
)

// While the guest is frozen for the job's start the record says so, and
// once it is thawed it does not: a vbackup killed in the freeze leaves a
// record the next one acts on.
func TestBeginRecordsTheFreeze(t *testing.T) {
	_, dom := fakeDomain(t)
	dom.SetAgent(true)
	var during virt.BackupRecord
	dom.OnFreeze(func(ctx context.Context) { during, _, _ = dom.BackupRecord(ctx) })
	plan := Plan{Pull: true, Checkpoint: "c1", BackupXML: pullOf, CheckpointXML: cpXML, Freeze: Freeze{Freeze: true}}
	if err := Begin(context.Background(), dom, plan, false, virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now()}, &notes{}); err != nil {
		t.Fatal(err)
	}
	if !during.Freezing {
		t.Error("while the guest was frozen, the job's record did not say so")
	}
	if rec, _, _ := dom.BackupRecord(context.Background()); rec.Freezing {
		t.Error("after the thaw the record still says the guest is being frozen")
	}
}

// A 'vbackup backup' killed while the guest was frozen left it so; the
// next vbackup command that settles the domain thaws it and says why. One
// whose process still runs is left alone: it thaws the guest itself.
func TestSettleThawsWhatADeadBackupFroze(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name  string
		pid   int
		thawn bool
	}{{"its vbackup died", deadPID(t), true}, {"its vbackup runs", os.Getpid(), false}} {
		t.Run(tc.name, func(t *testing.T) {
			_, dom := fakeDomain(t)
			dom.SetAgent(true)
			ctx := context.Background()
			rec := virt.BackupRecord{Checkpoint: "c1", Pull: true, Started: time.Now(), Dir: t.TempDir(), Host: host, PID: tc.pid, Freezing: true}
			if err := dom.SetBackupRecord(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if err := dom.FreezeFS(ctx); err != nil {
				t.Fatal(err)
			}
			n := &notes{}
			if err := Settle(ctx, dom, n); err != nil {
				t.Fatal(err)
			}
			if frozen := dom.Frozen(); frozen == tc.thawn {
				t.Errorf("after Settle the guest is frozen: %v, want %v", frozen, !tc.thawn)
			}
			if said := strings.Contains(n.String(), "thawed them"); said != tc.thawn {
				t.Errorf("Settle said %q; a thaw mentioned: %v, want %v", n, said, tc.thawn)
			}
		})
	}
}
