package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/virt"
)

// folderState is every file under dir with its size and time, to tell
// that nothing was written.
func folderState(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d %v %v", path, fi.Size(), fi.ModTime().UnixNano(), fi.Mode()))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func backupDryRun(t *testing.T, b bed, req BackupRequest) (DryRun, error) {
	t.Helper()
	req.DryRun = true
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		return DryRun{}, err
	}
	defer p.Close()
	return p.DryRun(context.Background())
}

// A dry run says, per disk, what the next backup would do and why, in
// each case an admin asks about, and changes nothing: no libvirt call
// that writes, not one file of the folder, not its lock.
func TestDryRun(t *testing.T) {
	for _, c := range []struct {
		name     string
		setup    func(t *testing.T, b bed, last *chain.Backup)
		req      func(r *BackupRequest)
		level    string
		reason   string
		first    string
		vdaLevel string
	}{
		{name: "incremental", level: chain.Incremental, reason: "changes since backup", vdaLevel: chain.Incremental},
		{name: "missing checkpoint redefined", setup: func(t *testing.T, b bed, last *chain.Backup) {
			if err := b.dom.DeleteCheckpoint(context.Background(), last.Name(), virt.DeleteFlags{MetadataOnly: true}); err != nil {
				t.Fatal(err)
			}
		}, level: chain.Incremental, reason: "changes since backup", first: "would be redefined from", vdaLevel: chain.Incremental},
		{name: "broken bitmap", setup: func(t *testing.T, b bed, last *chain.Backup) { b.dom.BreakCheckpoint(last.Name()) },
			level: chain.Full, reason: "the last backup's checkpoint is broken: libvirt finds no whole bitmap of checkpoint", vdaLevel: chain.Full},
		{name: "chain limit", req: func(r *BackupRequest) { r.MaxChain = 1 },
			level: chain.Full, reason: "1 incremental since the last full backup, as many as --max-chain 1 allows", vdaLevel: chain.Full},
		{name: "other folder's checkpoint", setup: func(t *testing.T, b bed, last *chain.Backup) {
			if err := b.dom.DeleteCheckpoint(context.Background(), last.Name(), virt.DeleteFlags{}); err != nil {
				t.Fatal(err)
			}
			create(t, b, fmt.Sprintf(`<domaincheckpoint><name>%s</name><description>vbackup backup into /elsewhere (folder 0badf00d)</description>%s</domaincheckpoint>`, last.Name(), vdaOnly))
		}, level: chain.Full, reason: "belongs to another backup folder", vdaLevel: chain.Full},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t)
			pushing(t, b)
			backupInto(t, b, b.dir, time.Now())
			last := backupInto(t, b, b.dir, time.Now().Add(time.Second))
			if c.setup != nil {
				c.setup(t, b, last)
			}
			req := b.request(t)
			if c.req != nil {
				c.req(&req)
			}
			before, cps, calls := folderState(t, b.dir), checkpoints(t, b.dom), len(b.conn.Calls())
			plan, err := backupDryRun(t, b, req)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Level != c.level || !strings.Contains(plan.Reason, c.reason) {
				t.Errorf("dry run: %s (%s); want %s (%s…)", plan.Level, plan.Reason, c.level, c.reason)
			}
			if len(plan.Disks) != 2 || plan.Disks[0].Level != c.vdaLevel || plan.Disks[1].Level != chain.Full || !strings.Contains(plan.Disks[1].Reason, "a raw disk") {
				t.Errorf("dry run's disks: %+v; want vda %s, vdb full as a raw disk", plan.Disks, c.vdaLevel)
			}
			if c.vdaLevel == chain.Incremental && (plan.From != last.Name() || plan.Disks[0].From != last.Name()) {
				t.Errorf("dry run builds on %q (vda on %q); want %s", plan.From, plan.Disks[0].From, last.Name())
			}
			if got := strings.Join(plan.First, "\n"); (c.first == "") != (got == "") || !strings.Contains(got, c.first) {
				t.Errorf("dry run's first steps: %q; want %q", got, c.first)
			}
			if !strings.HasPrefix(plan.Backup, "vbackup-") || !strings.Contains(plan.Backup, "-"+last.Folder) {
				t.Errorf("dry run names the backup %q; want a name of folder %s", plan.Backup, last.Folder)
			}
			if after := folderState(t, b.dir); after != before {
				t.Errorf("the dry run changed the folder:\n%s\nwas\n%s", after, before)
			}
			if got := checkpoints(t, b.dom); !slices.Equal(got, cps) {
				t.Errorf("the dry run changed libvirt's checkpoints: %v, were %v", got, cps)
			}
			for _, call := range b.conn.Calls()[calls:] {
				switch call {
				case "CreateCheckpoint", "DeleteCheckpoint", "BeginBackup", "AbortJob", "SetBackupRecord", "ClearBackupRecord", "DefineDomain":
					t.Errorf("the dry run called %s", call)
				}
			}
			// What it said is what a backup then does.
			req.Push, req.Now = true, func() time.Time { return time.Now().Add(2 * time.Second) }
			next := runBackup(t, b, req)
			if next.Level != plan.Level {
				t.Errorf("the backup after the dry run is %s; the dry run said %s", next.Level, plan.Level)
			}
		})
	}
}

// A dry run into a folder that does not exist says full, and makes no
// folder; one with --level inc that cannot be is refused as a backup is.
func TestDryRunNewFolderAndRefusal(t *testing.T) {
	b := newBed(t)
	plan, err := backupDryRun(t, b, b.request(t))
	if err != nil || plan.Level != chain.Full || plan.Reason != "no backup of the domain in this folder yet" {
		t.Fatalf("dry run into a new folder: %+v, %v", plan, err)
	}
	if _, err := os.Stat(b.dir); !os.IsNotExist(err) {
		t.Errorf("the dry run made the folder: %v", err)
	}
	pushing(t, b)
	last := backupInto(t, b, b.dir, time.Now())
	b.dom.BreakCheckpoint(last.Name())
	req := b.request(t)
	req.Level = chain.WantInc
	if _, err := backupDryRun(t, b, req); err == nil || !strings.Contains(err.Error(), "cannot be built on: libvirt finds no whole bitmap") {
		t.Errorf("dry run --level inc on a broken checkpoint: %v", err)
	}
}
