package commands

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"vbackup/chain"
)

// backupFolder makes a folder holding three backups of vm1, committed with
// package chain as vbackup backup does (with empty images):
//
//	vbackup-20261124T010000Z  full         vda vdb
//	vbackup-20261124T020000Z  incremental  vda (incremental), vdb (full)
//	vbackup-20261124T030000Z  incremental  vda, vdb (incremental), vdc (full)
func backupFolder(t *testing.T, dir string) (names []string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	disk := func(name, backing string) chain.Disk {
		d := chain.Disk{Name: name, File: name + ".qcow2", Format: "qcow2", Level: chain.Full, Bitmap: true,
			VirtualSize: 64 << 20, Checksum: "sha256-1m:00"}
		if backing != "" {
			d.Level, d.Backing = chain.Incremental, backing
		}
		return d
	}
	for hour, disks := range [][]chain.Disk{
		{disk("vda", ""), disk("vdb", "")},
		{disk("vda", "vbackup-20261124T010000Z"), disk("vdb", "")},
		{disk("vda", "vbackup-20261124T020000Z"), disk("vdb", "vbackup-20261124T020000Z"), disk("vdc", "")},
	} {
		name := fmt.Sprintf("vbackup-20261124T%02d0000Z", hour+1)
		level := chain.Full
		if hour > 0 {
			level = chain.Incremental
		}
		p, err := store.Begin(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range disks {
			if err := os.WriteFile(filepath.Join(p.Dir(), d.File), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.Commit(chain.Manifest{
			Domain:     chain.Domain{Name: "vm1", UUID: "7a0e2e0c-0000-4000-8000-000000000001", XML: "<domain/>"},
			Checkpoint: chain.Checkpoint{Name: name, XML: "<domaincheckpoint/>"},
			Time:       time.Date(2026, 11, 24, hour+1, 0, 0, 0, time.UTC),
			Level:      level,
			Mode:       "pull",
			Disks:      disks,
		}); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// restore and verify --at complete the backups in the --from folder, and
// restore --disk the disks of the backup --at names; without libvirt.
func TestCompleteBackupFolder(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "backups", "vm1")
	b := backupFolder(t, dir)
	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.MkdirAll(filepath.Join(broken, "vbackup-x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "vbackup-x", chain.ManifestFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{"HOME": home}
	tests := []struct {
		words []string
		want  []string
	}{
		{[]string{"restore", "--from", dir, "--at", ""}, []string{b[0], b[1], b[2], "latest"}},
		{[]string{"verify", "--from", dir, "--at", ""}, []string{b[0], b[1], b[2], "latest", "all"}},
		{[]string{"mount", "--from", dir, "--at", ""}, []string{b[0], b[1], b[2], "latest"}},
		{[]string{"cat", "--from", dir, "--at", b[0], "--disk", ""}, []string{"vda", "vdb"}},
		{[]string{"serve", "--from", dir, "--disk", "vdb", "--disk", ""}, []string{"vda", "vdc"}},
		{[]string{"restore", "--from=" + dir, "--at=vbackup-20261124T02"}, []string{"--at=" + b[1]}},
		{[]string{"restore", "--to", "/r", "--from", dir + "/", "--at", "l"}, []string{"latest"}},
		{[]string{"verify", "--from", "~/backups/vm1", "--at", "v"}, b},
		{[]string{"verify", "--from", dir, "--from", "/nonexistent", "--at", ""}, []string{"latest", "all"}}, // the last --from counts
		{[]string{"restore", "--from", broken, "--at", ""}, []string{"latest"}},

		{[]string{"restore", "--from", dir, "--disk", ""}, []string{"vda", "vdb", "vdc"}}, // the latest backup's
		{[]string{"restore", "--from", dir, "--at", "latest", "--disk", ""}, []string{"vda", "vdb", "vdc"}},
		{[]string{"restore", "--from", dir, "--at", b[0], "--disk", ""}, []string{"vda", "vdb"}},
		{[]string{"restore", "--from", dir, "--disk", "vdb", "--disk", ""}, []string{"vda", "vdc"}},
		{[]string{"restore", "--from", dir, "--disk=vdb", "--disk=v"}, []string{"--disk=vda", "--disk=vdc"}},
		{[]string{"restore", "--from", dir, "--disk", "vda,"}, nil},
		{[]string{"restore", "--from", dir, "--at", "nosuch", "--disk", ""}, nil},
		{[]string{"restore", "--from", "/nonexistent", "--disk", ""}, nil},
		{[]string{"restore", "--from", broken, "--disk", ""}, nil},
	}
	for _, tt := range tests {
		head, got := completeOut(t, noConn(t), environ, tt.words...)
		if head != "words" || !slices.Equal(got, tt.want) {
			t.Errorf("%q:\n got %q %q\nwant words %q", tt.words, head, got, tt.want)
		}
	}

	// The descriptions: when each backup was taken and its level; the
	// disks' sizes and levels.
	local := func(hour int) string {
		return time.Date(2026, 11, 24, hour, 0, 0, 0, time.UTC).Local().Format("2006-01-02 15:04:05")
	}
	for _, tt := range []struct {
		words []string
		want  string
	}{
		{[]string{"verify", "--from", dir, "--at", ""}, "words\n" +
			b[0] + "\t" + local(1) + ", full\n" +
			b[1] + "\t" + local(2) + ", incremental\n" +
			b[2] + "\t" + local(3) + ", incremental\n" +
			"latest\tthe newest backup, " + b[2] + "\n" +
			"all\tevery backup (the default)\n"},
		{[]string{"restore", "--from", dir, "--at", "la"}, "words\nlatest\tthe newest backup, " + b[2] + " (the default)\n"},
		{[]string{"restore", "--from", dir, "--at", b[1], "--disk", ""}, "words\n" +
			"vda\t64.000 MiB, incremental\n" +
			"vdb\t64.000 MiB, full\n"},
	} {
		r := vbEnv(t, noConn(t), nil, append([]string{"__complete", "zsh", "--"}, tt.words...)...)
		if r.code != 0 || r.stderr != "" || r.stdout != tt.want {
			t.Errorf("%q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tt.words, r.code, r.stderr, r.stdout, tt.want)
		}
	}
}
