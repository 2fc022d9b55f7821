package xmlgen

import (
	"testing"

	"vbackup/virt"
)

func alignedBackup(t *testing.T, spec BackupSpec, disks ...virt.Disk) BackupSpec {
	t.Helper()
	spec, _, err := AlignBackup(spec, "vm1", disks, backupNow)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestBackupXMLGolden(t *testing.T) {
	tests := []struct {
		golden string
		spec   BackupSpec
	}{
		// The seed's three cases, in the format libvirt shipped.
		{"backup-empty.xml", BackupSpec{}},
		{"backup-push.xml", BackupSpec{
			Incremental: "1525889631",
			Disks:       []BackupDisk{{Name: "vda", Type: "file", Target: "/path/to/file", Format: "raw"}},
		}},
		{"backup-pull.xml", BackupSpec{
			Pull:        true,
			Incremental: "1525889631",
			Server:      server(t, "tcp:localhost:10809", false),
			Disks:       []BackupDisk{{Name: "vda", Type: "file", Scratch: "/path/to/file"}},
		}},

		{"backup-push-skip.xml", alignedBackup(t,
			BackupSpec{Disks: backupDisks(t, "vdb,skip")}, qcow2A, rawB, cdrom)},
		{"backup-push-incremental-target-dir.xml", alignedBackup(t,
			BackupSpec{Incremental: "c1", Checkpoint: "c2", TargetDir: "/backup"}, qcow2A, qcow2B, cdrom)},
		{"backup-push-disk-incremental.xml", alignedBackup(t,
			BackupSpec{Checkpoint: "c3", TargetDir: "/backup", Disks: backupDisks(t, "vda,incremental=c1", "vdb,full,format=raw")},
			qcow2A, rawB, qcow2C)},
		{"backup-push-block.xml", alignedBackup(t,
			BackupSpec{Format: "raw", Disks: backupDisks(t, "vda,type=block,target=/dev/vg/vda-backup")}, qcow2A)},
		{"backup-pull-unix.xml", alignedBackup(t,
			BackupSpec{Pull: true, Server: server(t, "unix:/run/vbackup/vm1.sock", false), ScratchDir: "/var/tmp", Checkpoint: "c2"},
			qcow2A, rawB, cdrom)},
		{"backup-pull-tcp-tls.xml", alignedBackup(t,
			BackupSpec{
				Pull: true, Server: server(t, "tcp:backup.example.org:10809", true), Incremental: "c1", Checkpoint: "c2",
				Disks: backupDisks(t, "vda,export=disk0,bitmap=changed", "vdb,full,type=block,scratch=/dev/vg/scratch"),
			},
			qcow2A, rawB, cdrom)},
		{"backup-pull-ipv6.xml", BackupSpec{Pull: true, Server: server(t, "tcp:[::1]:10809", false)}},
		{"backup-escaped.xml", BackupSpec{
			Pull:   true,
			Server: server(t, "unix:/run/a&b/<s>.sock", false),
			Disks:  backupDisks(t, `vda,scratch=/tmp/a,,"b"&<c>,export=it's`),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := BackupXML(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			assertGolden(t, tt.golden, got, "domainbackup")
		})
	}
}

// BackupXML checks a spec that did not come from AlignBackup.
func TestBackupXMLErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    BackupSpec
		wantErr string
	}{
		{"disk given twice", BackupSpec{Disks: []BackupDisk{{Name: "vda"}, {Name: "vda", Skip: true}}},
			`disk "vda" is given twice by --disk; give each disk once`},
		{"no disk name", BackupSpec{Disks: []BackupDisk{{Target: "/b/x"}}},
			`--disk ",target=/b/x": the disk name is empty; write DISK[,KEY=VALUE]..., e.g. vda,target=/backup/vda.qcow2`},
		{"relative target", BackupSpec{Disks: []BackupDisk{{Name: "vda", Target: "b/x"}}},
			`--disk "vda,target=b/x": target must be an absolute path, not "b/x"`},
		{"pull without server", BackupSpec{Pull: true},
			`a pull backup needs --server unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT, where libvirt's NBD server listens`},
		{"tcp without port", BackupSpec{Pull: true, Server: &Server{Host: "localhost"}},
			`--server "tcp:localhost:0": the port must be a number from 1 to 65535, not "0"`},
		{"export clash with a default name", BackupSpec{Pull: true, Server: &Server{Socket: "/s"},
			Disks: []BackupDisk{{Name: "vda"}, {Name: "vdb", ExportName: "vda"}}},
			`disks "vda" and "vdb" would both be exported as "vda"; give one of them another name with export=NAME`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := BackupXML(tt.spec)
			if err == nil {
				t.Fatalf("got no error, want %q; document:\n%s", tt.wantErr, doc)
			}
			if err.Error() != tt.wantErr {
				t.Fatalf("error:\n got %s\nwant %s", err, tt.wantErr)
			}
		})
	}
}

// The backup schema check must be able to fail too: a relative target is
// what BackupXML refuses and the schema forbids, so marshal it around
// BackupXML.
func TestBackupSchemaCheckRejectsInvalidDocument(t *testing.T) {
	doc, err := Backup(BackupSpec{Disks: []BackupDisk{{Name: "vda", Target: "backup/vda.qcow2"}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, doc, "domainbackup")
}
