package chain

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func manifest(name string, at int, disks ...Disk) Manifest {
	return Manifest{
		Domain:     Domain{Name: "vm1", UUID: "7a0e2e0c-0000-4000-8000-000000000001", XML: "<domain/>"},
		Checkpoint: Checkpoint{Name: name, XML: "<domaincheckpoint/>"},
		Time:       time.Date(2026, 11, 24, at, 0, 0, 0, time.UTC),
		Level:      Full,
		Mode:       "pull",
		Disks:      disks,
	}
}

func full(name string) Disk {
	return Disk{Name: name, File: name + ".qcow2", Format: "qcow2", Level: Full, Bitmap: true, Checksum: "sha256-1m:00"}
}

func inc(name, on string) Disk {
	d := full(name)
	d.Level, d.Backing = Incremental, on
	return d
}

// commit writes a backup as the backup command does, with empty images.
func commit(t *testing.T, s *Store, m Manifest) *Backup {
	t.Helper()
	p, err := s.Begin(m.Checkpoint.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Disks {
		if err := os.WriteFile(filepath.Join(p.Dir(), d.File), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := p.Commit(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCommitOpenFindChain(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil || len(s.Backups) != 0 || s.Last() != nil {
		t.Fatalf("Open(empty) = %+v, %v", s, err)
	}
	commit(t, s, manifest("b1", 1, full("vda"), full("vdb")))
	commit(t, s, manifest("b2", 2, inc("vda", "b1"), full("vdb")))
	commit(t, s, manifest("b3", 3, inc("vda", "b2"), inc("vdb", "b2"), full("vdc")))

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Backups) != 3 || s.Last().Name() != "b3" {
		t.Fatalf("Open found %d backups, last %v; want 3, b3", len(s.Backups), s.Last())
	}
	for i, b := range s.Backups {
		if b.Seq != i+1 {
			t.Errorf("backup %s has seq %d, want %d", b.Name(), b.Seq, i+1)
		}
	}
	for _, f := range []string{ManifestFile, "checkpoint.xml", "domain.xml", "vda.qcow2"} {
		if _, err := os.Stat(filepath.Join(dir, "b1", f)); err != nil {
			t.Errorf("backup b1 lacks %s: %v", f, err)
		}
	}
	if b, err := s.Find("latest"); err != nil || b.Name() != "b3" {
		t.Errorf("Find(latest) = %v, %v", b, err)
	}
	if _, err := s.Find("b9"); err == nil || !strings.Contains(err.Error(), "it holds b1, b2, b3") {
		t.Errorf("Find(b9) = %v; want the backups listed", err)
	}
	names := func(bs []*Backup) string {
		var out []string
		for _, b := range bs {
			out = append(out, b.Name())
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct{ at, disk, want string }{
		{"b3", "vda", "b1 b2 b3"},
		{"b3", "vdb", "b2 b3"},
		{"b3", "vdc", "b3"},
		{"b2", "vda", "b1 b2"},
	} {
		b, _ := s.Find(c.at)
		got, err := s.Chain(b, c.disk)
		if err != nil || names(got) != c.want {
			t.Errorf("Chain(%s, %s) = %q, %v; want %q", c.at, c.disk, names(got), err, c.want)
		}
	}
	b1, _ := s.Find("b1")
	if _, err := s.Chain(b1, "vdc"); err == nil {
		t.Errorf("Chain(b1, vdc) succeeded; b1 has no vdc")
	}
	p, err := s.Begin("b4")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Backing(s.Last(), inc("vda", "b2")); got != "../b3/vda.qcow2" {
		t.Errorf("Backing = %q, want ../b3/vda.qcow2", got)
	}
	p.Abort()
}

func TestNothingIsWrittenOver(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	commit(t, s, manifest("b1", 1, full("vda")))
	if _, err := s.Begin("b1"); err == nil || !strings.Contains(err.Error(), "never writes over") {
		t.Fatalf("Begin(b1) again = %v; want a refusal", err)
	}
	// A commit whose image is missing leaves nothing under the name.
	p, err := s.Begin("b2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(manifest("b2", 2, inc("vda", "b1"))); err == nil {
		t.Fatal("Commit without the image succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "b2")); err == nil {
		t.Fatal("a failed commit left b2 in the store")
	}
	if err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(dir); err != nil || len(s2.Backups) != 1 {
		t.Fatalf("after an aborted backup: %v backups, %v; want 1", len(s2.Backups), err)
	}
}

func TestLeftoversAndLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); err == nil || !strings.Contains(err.Error(), "another vbackup command") {
		t.Fatalf("second Lock = %v; want it refused", err)
	}
	unlock()
	s, _ := Open(dir)
	p, _ := s.Begin("b1")
	os.WriteFile(filepath.Join(p.Dir(), "vda.qcow2"), []byte("half"), 0o644)
	// The process dies here: the next command finds the leftover.
	s, err = Open(dir)
	if err != nil || len(s.Backups) != 0 {
		t.Fatalf("Open with a partial backup = %d backups, %v; want none", len(s.Backups), err)
	}
	removed, err := s.Leftovers()
	if err != nil || strings.Join(removed, ",") != "b1" {
		t.Fatalf("Leftovers = %v, %v; want b1", removed, err)
	}
	if _, err := os.Stat(p.Dir()); err == nil {
		t.Fatal("the partial folder is still there")
	}
	if unlock, err := Lock(dir); err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	} else {
		unlock()
	}
}

func TestOpenRefusesABrokenStore(t *testing.T) {
	write := func(t *testing.T, dir string, m Manifest) {
		m.Format = FormatVersion
		os.MkdirAll(filepath.Join(dir, m.Checkpoint.Name), 0o755)
		data, _ := json.Marshal(m)
		os.WriteFile(filepath.Join(dir, m.Checkpoint.Name, ManifestFile), data, 0o644)
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"missing base", func(t *testing.T, dir string) {
			write(t, dir, manifest("b2", 2, inc("vda", "b1")))
		}, "builds on backup b1, which is not in"},
		{"two domains", func(t *testing.T, dir string) {
			write(t, dir, manifest("b1", 1, full("vda")))
			m := manifest("b2", 2, full("vda"))
			m.Domain.UUID, m.Domain.Name = "7a0e2e0c-0000-4000-8000-000000000002", "vm2"
			write(t, dir, m)
		}, "holds backups of two domains"},
		{"renamed folder", func(t *testing.T, dir string) {
			write(t, dir, manifest("b1", 1, full("vda")))
			os.Rename(filepath.Join(dir, "b1"), filepath.Join(dir, "old"))
		}, `describes backup "b1", not "old"`},
		{"not JSON", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "b1"), 0o755)
			os.WriteFile(filepath.Join(dir, "b1", ManifestFile), []byte("{"), 0o644)
		}, "b1/manifest.json"},
		{"other format", func(t *testing.T, dir string) {
			write(t, dir, manifest("b1", 1, full("vda")))
			data, _ := os.ReadFile(filepath.Join(dir, "b1", ManifestFile))
			os.WriteFile(filepath.Join(dir, "b1", ManifestFile), []byte(strings.Replace(string(data), FormatVersion, "vbackup-manifest/9", 1)), 0o644)
		}, `format "vbackup-manifest/9"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, dir)
			if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v; want an error containing %q", err, c.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	last := &Backup{Manifest: manifest("b1", 1, full("vda"), full("vdb"), full("vdd"))}
	last.Disks[2].Bitmap = false
	qcow := func(n string) DiskInfo { return DiskInfo{Name: n, CanBitmap: true} }
	raw := DiskInfo{Name: "vde", Why: "a raw disk"}
	type want struct {
		level string
		disks string // name:level,...
		err   string
		in    string // in the reason
	}
	cases := []struct {
		name    string
		want    string
		last    *Backup
		lastOK  bool
		disks   []DiskInfo
		outcome want
	}{
		{"first backup", WantAuto, nil, false, []DiskInfo{qcow("vda")}, want{level: Full, disks: "vda:full", in: "no backup"}},
		{"first backup, inc asked", WantInc, nil, false, []DiskInfo{qcow("vda")}, want{err: "the first backup is full"}},
		{"incremental", WantAuto, last, true, []DiskInfo{qcow("vda"), qcow("vdb")}, want{level: Incremental, disks: "vda:incremental,vdb:incremental", in: "since backup b1"}},
		{"forced full", WantFull, last, true, []DiskInfo{qcow("vda")}, want{level: Full, disks: "vda:full", in: "--level full"}},
		{"checkpoint gone", WantAuto, last, false, []DiskInfo{qcow("vda")}, want{level: Full, disks: "vda:full", in: "bitmap lost"}},
		{"checkpoint gone, inc asked", WantInc, last, false, []DiskInfo{qcow("vda")}, want{err: "bitmap lost"}},
		{"new, raw, untracked and removed disks", WantAuto, last, true, []DiskInfo{qcow("vda"), qcow("vdc"), qcow("vdd"), raw},
			want{level: Incremental, disks: "vda:incremental,vdc:full,vdd:full,vde:full"}},
		{"only a raw disk", WantAuto, last, true, []DiskInfo{raw}, want{level: Full, disks: "vde:full", in: "copied whole"}},
		{"only a raw disk, inc asked", WantInc, last, true, []DiskInfo{raw}, want{err: "no disk of domain \"vm1\" can be backed up incrementally"}},
		{"bad level", "weekly", nil, false, []DiskInfo{qcow("vda")}, want{err: "use auto, full or inc"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Decide(c.want, "vm1", c.last, c.lastOK, "bitmap lost", c.disks)
			if c.outcome.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.outcome.err) {
					t.Fatalf("Decide = %+v, %v; want error %q", d, err, c.outcome.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, x := range d.Disks {
				got = append(got, x.Name+":"+x.Level)
			}
			if d.Level != c.outcome.level || strings.Join(got, ",") != c.outcome.disks || !strings.Contains(d.Reason, c.outcome.in) {
				t.Errorf("Decide = %s %v (%q); want %s %s (reason with %q)", d.Level, got, d.Reason, c.outcome.level, c.outcome.disks, c.outcome.in)
			}
			if (d.Level == Incremental) != (d.From != nil) {
				t.Errorf("From = %v for level %s", d.From, d.Level)
			}
		})
	}
	d, _ := Decide(WantAuto, "vm1", last, true, "", []DiskInfo{qcow("vda"), qcow("vdc"), qcow("vdd"), raw})
	reasons := map[string]string{}
	for _, x := range d.Disks {
		reasons[x.Name] = x.Reason
	}
	if reasons["vdc"] != "new since the last backup" || !strings.Contains(reasons["vdd"], "does not track it") ||
		!strings.Contains(reasons["vde"], "a raw disk: it cannot carry") || reasons["vda"] != "" {
		t.Errorf("per-disk reasons = %q", reasons)
	}
	if strings.Join(d.Ended, ",") != "vdb" {
		t.Errorf("Ended = %v, want vdb (no longer in the domain)", d.Ended)
	}
}

// A clock set back between two backups does not reorder them.
func TestClockSetBack(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir)
	commit(t, s, manifest("b1", 10, full("vda")))
	m := manifest("b2", 9, inc("vda", "b1")) // an hour earlier by the clock
	commit(t, s, m)
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open after the clock went back: %v", err)
	}
	if s.Last().Name() != "b2" {
		t.Errorf("Last = %s, want b2", s.Last().Name())
	}
}
