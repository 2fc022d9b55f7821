package xmlgen

import (
	"reflect"
	"testing"
	"time"

	"vbackup/virt"
)

// backupNow is 12:00 UTC, given in another zone: file names are in UTC.
var backupNow = time.Date(2026, 11, 24, 13, 0, 0, 0, time.FixedZone("CET", 3600))

func backupDisks(t *testing.T, args ...string) []BackupDisk {
	t.Helper()
	var ds []BackupDisk
	for _, a := range args {
		d, err := ParseBackupDisk(a)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func server(t *testing.T, s string, tls bool) *Server {
	t.Helper()
	srv, err := ParseServer(s)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = tls
	return &srv
}

func TestAlignBackup(t *testing.T) {
	unix := server(t, "unix:/run/vbackup/vm1.sock", false)
	tests := []struct {
		name      string
		spec      BackupSpec
		disks     []virt.Disk
		want      []BackupDisk
		wantNotes []string
		wantErr   string
	}{
		{
			name:  "push defaults: beside the images, named by the time",
			disks: []virt.Disk{cdrom, qcow2A, rawC, iso},
			want: []BackupDisk{
				{Name: "sda", Skip: true},
				{Name: "vda", Type: "file", Target: "/img/a.qcow2.20261124T120000Z.qcow2", Format: "qcow2"},
				{Name: "vdc", Type: "file", Target: "/img/c.raw.20261124T120000Z.qcow2", Format: "qcow2"},
				{Name: "sdb", Skip: true},
			},
			wantNotes: []string{
				"no --target-dir: the backup of vda goes beside its image, to /img/a.qcow2.20261124T120000Z.qcow2",
				"no --target-dir: the backup of vdc goes beside its image, to /img/c.raw.20261124T120000Z.qcow2",
			},
		},
		{
			name:  "read-only and unknown-format disks by default",
			spec:  BackupSpec{TargetDir: "/backup", Checkpoint: "c1"},
			disks: []virt.Disk{qcow2A, roC, unknown},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Target: "/backup/vm1.vda.c1.qcow2", Format: "qcow2"},
				{Name: "vdc", Skip: true},
				{Name: "vdd", Type: "file", Target: "/backup/vm1.vdd.c1.qcow2", Format: "qcow2"},
			},
		},
		{
			name:  "incremental into --target-dir, named by the new checkpoint",
			spec:  BackupSpec{Incremental: "c1", Checkpoint: "c2", TargetDir: "/backup/"},
			disks: []virt.Disk{qcow2A, qcow2B, cdrom},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Target: "/backup/vm1.vda.c2.qcow2", Format: "qcow2"},
				{Name: "vdb", Type: "file", Target: "/backup/vm1.vdb.c2.qcow2", Format: "qcow2"},
				{Name: "sda", Skip: true},
			},
		},
		{
			name:  "--format for every target, a disk's own format first",
			spec:  BackupSpec{TargetDir: "/backup", Format: "raw", Disks: backupDisks(t, "vdb,format=qcow2", "vda")},
			disks: []virt.Disk{qcow2A, qcow2B},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Target: "/backup/vm1.vda.20261124T120000Z.raw", Format: "raw"},
				{Name: "vdb", Type: "file", Target: "/backup/vm1.vdb.20261124T120000Z.qcow2", Format: "qcow2"},
			},
		},
		{
			name:  "once a disk is named, only named disks take part",
			spec:  BackupSpec{Disks: backupDisks(t, "vdb,target=/b/vdb.qcow2")},
			disks: []virt.Disk{qcow2A, qcow2B, cdrom},
			want: []BackupDisk{
				{Name: "vda", Skip: true},
				{Name: "vdb", Type: "file", Target: "/b/vdb.qcow2", Format: "qcow2"},
				{Name: "sda", Skip: true},
			},
			wantNotes: []string{"disk vda is not named by --disk: left out of this backup"},
		},
		{
			name:  "skip alone leaves the other disks as by default",
			spec:  BackupSpec{Incremental: "c1", TargetDir: "/backup", Disks: backupDisks(t, "vdb,skip")},
			disks: []virt.Disk{qcow2A, rawB, cdrom},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Target: "/backup/vm1.vda.20261124T120000Z.qcow2", Format: "qcow2"},
				{Name: "vdb", Skip: true},
				{Name: "sda", Skip: true},
			},
		},
		{
			name:  "a raw disk copied whole in an incremental job",
			spec:  BackupSpec{Incremental: "c1", Checkpoint: "c2", TargetDir: "/backup", Disks: backupDisks(t, "vda", "vdb,full,format=raw")},
			disks: []virt.Disk{qcow2A, rawB},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Target: "/backup/vm1.vda.c2.qcow2", Format: "qcow2"},
				{Name: "vdb", Full: true, Type: "file", Target: "/backup/vm1.vdb.c2.raw", Format: "raw"},
			},
		},
		{
			name:  "per-disk incremental without a job-wide one",
			spec:  BackupSpec{Disks: backupDisks(t, "vda,incremental=c1,target=/b/a.qcow2")},
			disks: []virt.Disk{qcow2A, rawB},
			want: []BackupDisk{
				{Name: "vda", Incremental: "c1", Type: "file", Target: "/b/a.qcow2", Format: "qcow2"},
				{Name: "vdb", Skip: true},
			},
			wantNotes: []string{"disk vdb is not named by --disk: left out of this backup"},
		},
		{
			name:  "block target",
			spec:  BackupSpec{Disks: backupDisks(t, "vda,type=block,target=/dev/vg/vda-backup,format=raw")},
			disks: []virt.Disk{qcow2A},
			want:  []BackupDisk{{Name: "vda", Type: "block", Target: "/dev/vg/vda-backup", Format: "raw"}},
		},
		{
			name:  "pull into --scratch-dir",
			spec:  BackupSpec{Pull: true, Server: unix, ScratchDir: "/var/tmp", Checkpoint: "c2"},
			disks: []virt.Disk{qcow2A, rawB, cdrom},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Scratch: "/var/tmp/vm1.vda.c2.scratch.qcow2"},
				{Name: "vdb", Type: "file", Scratch: "/var/tmp/vm1.vdb.c2.scratch.qcow2"},
				{Name: "sda", Skip: true},
			},
		},
		{
			name:  "pull, scratch beside the image, --format qcow2 allowed",
			spec:  BackupSpec{Pull: true, Format: "qcow2", Server: server(t, "tcp:localhost:10809", true)},
			disks: []virt.Disk{qcow2A},
			want:  []BackupDisk{{Name: "vda", Type: "file", Scratch: "/img/a.qcow2.20261124T120000Z.scratch.qcow2"}},
			wantNotes: []string{
				"no --scratch-dir: the scratch file of vda goes beside its image, to /img/a.qcow2.20261124T120000Z.scratch.qcow2 (libvirt deletes it when the job ends)",
			},
		},
		{
			name: "pull with export names, a bitmap and a block scratch",
			spec: BackupSpec{Pull: true, Server: unix, Incremental: "c1", ScratchDir: "/var/tmp",
				Disks: backupDisks(t, "vda,export=disk0,bitmap=changed", "vdb,full,type=block,scratch=/dev/vg/scratch")},
			disks: []virt.Disk{qcow2A, rawB},
			want: []BackupDisk{
				{Name: "vda", Type: "file", Scratch: "/var/tmp/vm1.vda.20261124T120000Z.scratch.qcow2", ExportName: "disk0", ExportBitmap: "changed"},
				{Name: "vdb", Full: true, Type: "block", Scratch: "/dev/vg/scratch"},
			},
		},

		// The job's options.
		{name: "no disks", wantErr: `domain "vm1" has no disks: there is nothing to back up`},
		{name: "bad --format", spec: BackupSpec{Format: "vmdk"}, disks: []virt.Disk{qcow2A},
			wantErr: `--format must be qcow2 or raw, not "vmdk"`},
		{name: "relative --target-dir", spec: BackupSpec{TargetDir: "backup"}, disks: []virt.Disk{qcow2A},
			wantErr: `--target-dir must be an absolute path, not "backup"`},
		{name: "relative --scratch-dir", spec: BackupSpec{Pull: true, Server: unix, ScratchDir: "tmp"}, disks: []virt.Disk{qcow2A},
			wantErr: `--scratch-dir must be an absolute path, not "tmp"`},
		{name: "--target-dir with --pull", spec: BackupSpec{Pull: true, Server: unix, TargetDir: "/backup"}, disks: []virt.Disk{qcow2A},
			wantErr: `--target-dir is for a push backup; a pull backup writes only scratch files: give --scratch-dir`},
		{name: "--scratch-dir with push", spec: BackupSpec{ScratchDir: "/var/tmp"}, disks: []virt.Disk{qcow2A},
			wantErr: `--scratch-dir is for a pull backup (--pull); a push backup writes to --target-dir`},
		{name: "--format raw with --pull", spec: BackupSpec{Pull: true, Server: unix, Format: "raw"}, disks: []virt.Disk{qcow2A},
			wantErr: `--format is for a push backup's targets; a pull backup's scratch files are always qcow2`},
		{name: "pull without a server", spec: BackupSpec{Pull: true}, disks: []virt.Disk{qcow2A},
			wantErr: `a pull backup needs --server unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT, where libvirt's NBD server listens`},
		{name: "server with push", spec: BackupSpec{Server: unix}, disks: []virt.Disk{qcow2A},
			wantErr: `--server is for a pull backup; add --pull, or drop --server`},
		{name: "server with both transports", spec: BackupSpec{Pull: true, Server: &Server{Socket: "/s", Host: "h", Port: 1}}, disks: []virt.Disk{qcow2A},
			wantErr: `server: give a unix socket or a TCP host and port, not both`},
		{name: "bad --incremental", spec: BackupSpec{Incremental: "../c1"}, disks: []virt.Disk{qcow2A},
			wantErr: `--incremental "../c1" does not name a checkpoint: names have only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{name: "bad --checkpoint", spec: BackupSpec{Checkpoint: "a/b"}, disks: []virt.Disk{qcow2A},
			wantErr: `checkpoint name "a/b": use only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{name: "new checkpoint named as the old", spec: BackupSpec{Incremental: "c1", Checkpoint: "c1"}, disks: []virt.Disk{qcow2A},
			wantErr: `--checkpoint "c1" is the checkpoint this backup starts from (--incremental); the new checkpoint needs a name of its own`},

		// Each --disk against the job's mode.
		{name: "scratch in a push", spec: BackupSpec{Disks: backupDisks(t, "vda,scratch=/s/x")}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,scratch=/s/x": scratch= is for a pull backup (--pull); a push backup takes target=`},
		{name: "export in a push", spec: BackupSpec{Disks: backupDisks(t, "vda,export=e")}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,export=e": export= and bitmap= name what a pull backup (--pull) serves over NBD; a push backup has no export`},
		{name: "target in a pull", spec: BackupSpec{Pull: true, Server: unix, Disks: backupDisks(t, "vda,target=/b/x")}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,target=/b/x": target= and format= are for a push backup; a pull backup takes scratch=`},
		{name: "skip with target", spec: BackupSpec{Disks: []BackupDisk{{Name: "vda", Skip: true, Target: "/b/x"}}}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,skip,target=/b/x": skip leaves the disk out, so target= means nothing with it; drop one of them`},
		{name: "bitmap of a full backup", spec: BackupSpec{Pull: true, Server: unix, Disks: backupDisks(t, "vda,bitmap=b")}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,bitmap=b": bitmap= names the dirty bitmap of an incremental backup, but this disk's backup is full; add incremental=CHECKPOINT or --incremental CHECKPOINT`},
		{name: "bitmap of a disk made full", spec: BackupSpec{Pull: true, Server: unix, Incremental: "c1", Disks: backupDisks(t, "vda,full,bitmap=b")}, disks: []virt.Disk{qcow2A},
			wantErr: `--disk "vda,full,bitmap=b": bitmap= names the dirty bitmap of an incremental backup, but this disk's backup is full; add incremental=CHECKPOINT or --incremental CHECKPOINT`},

		// Each --disk against the domain's disks.
		{name: "unknown disk", spec: BackupSpec{Disks: backupDisks(t, "vdz")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `domain "vm1" has no disk "vdz"; its disks are vda, vdb`},
		{name: "a disk named by its path", spec: BackupSpec{Disks: backupDisks(t, "/img/b.qcow2")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `domain "vm1" has no disk "/img/b.qcow2"; its disks are vda, vdb (--disk names a disk by its target: vdb is /img/b.qcow2)`},
		{name: "a disk given twice", spec: BackupSpec{Disks: backupDisks(t, "vda", "vdb", "vda,target=/b/x")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `disk "vda" is given twice by --disk; give each disk once`},
		{name: "a disk given and skipped", spec: BackupSpec{Disks: backupDisks(t, "vda,skip", "vda")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `disk "vda" is given twice by --disk; give each disk once`},
		{name: "an empty drive given", spec: BackupSpec{Disks: backupDisks(t, "sda")}, disks: []virt.Disk{qcow2A, cdrom},
			wantErr: `--disk "sda": disk "sda" is empty: there is nothing of it to back up; leave it out`},
		{name: "a read-only disk given", spec: BackupSpec{Disks: backupDisks(t, "vdc,target=/b/c")}, disks: []virt.Disk{qcow2A, roC},
			wantErr: `--disk "vdc,target=/b/c": disk "vdc" is read-only: there is nothing of it to back up; leave it out`},
		{name: "every disk skipped", spec: BackupSpec{Disks: backupDisks(t, "vda,skip")}, disks: []virt.Disk{qcow2A, cdrom, roC},
			wantErr: `no disk of domain "vm1" takes part in this backup: every disk is skipped, empty or read-only`},

		// Bitmaps.
		{name: "incremental with a raw disk by default", spec: BackupSpec{Incremental: "c1"}, disks: []virt.Disk{qcow2A, rawB, cdrom, qcow2C},
			wantErr: `disk "vdb" is raw: only qcow2 disks carry the checkpoint bitmaps an incremental backup reads; leave it out with --disk vdb,skip, or copy it whole with --disk vdb,full --disk vda --disk vde`},
		{name: "incremental with only a raw disk", spec: BackupSpec{Incremental: "c1"}, disks: []virt.Disk{rawB, cdrom},
			wantErr: `disk "vdb" is raw: only qcow2 disks carry the checkpoint bitmaps an incremental backup reads; copy it whole with a full backup (without --incremental)`},
		{name: "incremental with a raw disk given", spec: BackupSpec{Incremental: "c1", TargetDir: "/b", Disks: backupDisks(t, "vda", "vdb")}, disks: []virt.Disk{qcow2A, rawB},
			wantErr: `disk "vdb" is raw: only qcow2 disks carry the checkpoint bitmaps an incremental backup reads; copy it whole with --disk vdb,full, or leave it out`},
		{name: "per-disk incremental on a raw disk", spec: BackupSpec{TargetDir: "/b", Disks: backupDisks(t, "vda", "vdc,incremental=c1")}, disks: []virt.Disk{qcow2A, rawC},
			wantErr: `disk "vdc" is raw: only qcow2 disks carry the checkpoint bitmaps an incremental backup reads; copy it whole with --disk vdc,full, or leave it out`},

		// Files.
		{name: "no place beside a block device", disks: []virt.Disk{qcow2A, rawB},
			wantErr: `disk "vdb" is a block device (/dev/vg/b): vbackup cannot put a backup beside it; give --target-dir DIR or --disk vdb,target=/PATH, or leave it out with --disk vdb,skip`},
		{name: "no scratch beside a network disk", spec: BackupSpec{Pull: true, Server: unix}, disks: []virt.Disk{qcow2A, unknown},
			wantErr: `disk "vdd" is a network disk (pool/d): vbackup cannot put a scratch file beside it; give --scratch-dir DIR or --disk vdd,scratch=/PATH, or leave it out with --disk vdd,skip`},
		{name: "one target for two disks", spec: BackupSpec{Disks: backupDisks(t, "vda,target=/b/x", "vdb,target=/b/x")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `disks "vda" and "vdb" would both be written to /b/x; give each its own target`},
		{name: "target over a disk image", spec: BackupSpec{Disks: backupDisks(t, "vda,target=/img/b.qcow2")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `the target of disk "vda", /img/b.qcow2, is the image of disk "vdb": choose another path`},
		{name: "scratch over a disk image", spec: BackupSpec{Pull: true, Server: unix, Disks: backupDisks(t, "vda,type=block,scratch=/dev/vg/b")}, disks: []virt.Disk{qcow2A, rawB},
			wantErr: `the scratch of disk "vda", /dev/vg/b, is the image of disk "vdb": choose another path`},
		{name: "two disks exported under one name", spec: BackupSpec{Pull: true, Server: unix, ScratchDir: "/s", Disks: backupDisks(t, "vda,export=vdb", "vdb")}, disks: []virt.Disk{qcow2A, qcow2B},
			wantErr: `disks "vda" and "vdb" would both be exported as "vdb"; give one of them another name with export=NAME`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes, err := AlignBackup(tt.spec, "vm1", tt.disks, backupNow)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("got %+v, want error %q", got.Disks, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("error:\n got %s\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Disks, tt.want) {
				t.Errorf("disks:\n got %+v\nwant %+v", got.Disks, tt.want)
			}
			if !reflect.DeepEqual(notes, tt.wantNotes) {
				t.Errorf("notes:\n got %q\nwant %q", notes, tt.wantNotes)
			}
			want := tt.spec
			want.Disks = got.Disks
			if !reflect.DeepEqual(got, want) {
				t.Errorf("AlignBackup changed more than the disks:\n got %+v\nwant %+v", got, want)
			}
			// An aligned spec is its own alignment, and a valid document.
			again, notes, err := AlignBackup(got, "vm1", tt.disks, backupNow.Add(time.Hour))
			if err != nil || !reflect.DeepEqual(again, got) || len(notes) != 0 {
				t.Errorf("aligning again: %v, notes %q, disks\n got %+v\nwant %+v", err, notes, again.Disks, got.Disks)
			}
			doc, err := BackupXML(got)
			if err != nil {
				t.Fatalf("BackupXML of the aligned spec: %v", err)
			}
			if err := validate(t, doc, "domainbackup"); err != nil {
				t.Errorf("libvirt's schema rejects the document: %v\n%s", err, doc)
			}
		})
	}
}

var qcow2C = virt.Disk{Target: "vde", Device: "disk", Type: "file", Source: "/img/e.qcow2", Format: "qcow2"}

func TestBackupTargets(t *testing.T) {
	push, _, err := AlignBackup(BackupSpec{TargetDir: "/backup", Checkpoint: "c1",
		Disks: backupDisks(t, "vdb,type=block,target=/dev/vg/vdb-backup", "vda", "vdc,target=/b/c.raw,format=raw")},
		"vm1", []virt.Disk{qcow2A, rawB, rawC, cdrom}, backupNow)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := push.Targets(), []string{"/backup/vm1.vda.c1.qcow2", "/b/c.raw"}; !reflect.DeepEqual(got, want) {
		t.Errorf("push Targets() = %q, want %q", got, want)
	}
	pull, _, err := AlignBackup(BackupSpec{Pull: true, Server: &Server{Socket: "/run/s"}, ScratchDir: "/var/tmp"},
		"vm1", []virt.Disk{qcow2A, cdrom, qcow2B}, backupNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/var/tmp/vm1.vda.20261124T120000Z.scratch.qcow2", "/var/tmp/vm1.vdb.20261124T120000Z.scratch.qcow2"}
	if got := pull.Targets(); !reflect.DeepEqual(got, want) {
		t.Errorf("pull Targets() = %q, want %q", got, want)
	}
}
