package commands

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// folderFiles is every file under dir with its size and time.
func folderFiles(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s %d %d", path, fi.Size(), fi.ModTime().UnixNano()))
		}
		return nil
	})
	return strings.Join(out, "\n")
}

// backup --dry-run on the real daemon: per disk, what the next backup
// would do and why, as text and JSON; libvirt's checkpoints, the folder
// and its lock are as they were. After a bitmap is lost, it says full
// and why, as the backup then does.
func TestBackupDryRun(t *testing.T) {
	open, bed := realDaemon(t)
	dom := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
	dir := filepath.Join(t.TempDir(), "backups")

	r := vb(t, open, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "would be full (no backup of the domain in this folder yet); nothing was changed") {
		t.Errorf("dry run into a new folder:\n%s", r.stdout)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the dry run made the folder: %v", err)
	}
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	first := storeBackups(t, dir)[0]
	bed.Write(t, dom, "vda", 0x5a, 1<<20, 1<<20)

	files, cps := folderFiles(t, dir), checkpointNames(t, bed, dom)
	r = vb(t, open, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	for _, want := range []string{
		"would be incremental (changes since backup " + first.Name() + "); nothing was changed",
		"  vda    incremental from " + first.Name(),
		"  vdb    full: a raw disk: it cannot carry a checkpoint bitmap",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the dry run lacks %q:\n%s", want, r.stdout)
		}
	}
	r = vb(t, open, "backup", dom, "--to", dir, "--dry-run", "--json")
	wantCode(t, r, ExitOK)
	var plan struct {
		Type, Level, From, Backup string
		Disks                     []struct{ Name, Level, From, Reason string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil || plan.Type != "dry-run" || plan.Level != "incremental" ||
		plan.From != first.Name() || len(plan.Disks) != 2 || plan.Disks[0].From != first.Name() || plan.Disks[1].Level != "full" {
		t.Errorf("dry run --json: %+v, %v\n%s", plan, err, r.stdout)
	}
	if got := folderFiles(t, dir); got != files {
		t.Errorf("the dry runs changed the folder:\n%s\nwas\n%s", got, files)
	}
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, cps) {
		t.Errorf("the dry runs changed libvirt's checkpoints: %v, were %v", got, cps)
	}

	removeBitmap(t, bed, dom, first.Name())
	r = vb(t, open, "backup", dom, "--to", dir, "--dry-run")
	wantCode(t, r, ExitOK)
	if !strings.Contains(r.stdout, "would be full (the last backup's checkpoint is broken: libvirt finds no whole bitmap of checkpoint "+first.Name()+" on vda") {
		t.Errorf("the dry run after a lost bitmap:\n%s", r.stdout)
	}
	r = vb(t, open, "backup", dom, "--to", dir, "--dry-run", "--level", "inc")
	wantCode(t, r, ExitFailure)
	wantStderr(t, r, "cannot be built on: libvirt finds no whole bitmap")
	if got := checkpointNames(t, bed, dom); !slices.Equal(got, cps) {
		t.Errorf("the dry runs changed libvirt's checkpoints: %v, were %v", got, cps)
	}
	wantCode(t, vb(t, open, "backup", dom, "--to", dir), ExitOK)
	if got := backupLevels(t, dir); len(got) != 2 || !strings.HasPrefix(got[1], "full:") {
		t.Errorf("the backup after the dry run: %v; the dry run said full", got)
	}
	// The folder's lock is not taken: a dry run works beside a backup
	// (the lock is held until the test ends: flock's child keeps it).
	unlock := lockFolder(t, dir)
	r = vb(t, open, "backup", dom, "--to", dir, "--dry-run")
	defer unlock()
	wantCode(t, r, ExitOK)
}

// --dry-run beside a flag that only matters when the backup runs is a
// usage error, and changes nothing.
func TestBackupDryRunFlags(t *testing.T) {
	for _, flags := range [][]string{{"--push"}, {"--compress", "zstd"}, {"--compress", "none"}, {"--quiet"}} {
		_, r := parse(t, newBackupCommand, append([]string{"backup", "vm1", "--to", "/b", "--dry-run"}, flags...)...)
		wantCode(t, r, ExitUsage)
		wantStderr(t, r, "--dry-run cannot be used with "+flags[0]+", which only matters when the backup runs")
	}
	opts, r := parse(t, newBackupCommand, "backup", "vm1", "--to", "/b", "--dry-run", "--level", "inc", "--disk", "vda", "--json")
	wantCode(t, r, ExitOK)
	if !opts.DryRun || !opts.JSON || opts.Level != "inc" {
		t.Errorf("options: %+v", opts)
	}
}
