package xmlgen

import "testing"

func TestParseBackupDisk(t *testing.T) {
	const keys = "keys are skip, full, type, target, format, scratch, incremental, export, bitmap"
	tests := []struct {
		in      string
		want    BackupDisk
		wantErr string
	}{
		{in: "vda", want: BackupDisk{Name: "vda"}},
		{in: "vdb,skip", want: BackupDisk{Name: "vdb", Skip: true}},
		{in: "vda,full", want: BackupDisk{Name: "vda", Full: true}},
		{in: "vda,target=/backup/vda.qcow2", want: BackupDisk{Name: "vda", Target: "/backup/vda.qcow2"}},
		{in: "vda,target=/backup/vda.raw,format=raw", want: BackupDisk{Name: "vda", Target: "/backup/vda.raw", Format: "raw"}},
		{in: "vda,format=raw", want: BackupDisk{Name: "vda", Format: "raw"}},
		{in: "vda,format=qcow2,target=/b/x", want: BackupDisk{Name: "vda", Target: "/b/x", Format: "qcow2"}},
		{in: "vda,type=block,target=/dev/vg/backup", want: BackupDisk{Name: "vda", Type: "block", Target: "/dev/vg/backup"}},
		{in: "vda,type=file,scratch=/var/tmp/vda.scratch", want: BackupDisk{Name: "vda", Type: "file", Scratch: "/var/tmp/vda.scratch"}},
		{in: "vda,scratch=/var/tmp/s", want: BackupDisk{Name: "vda", Scratch: "/var/tmp/s"}},
		{in: "vda,incremental=c1", want: BackupDisk{Name: "vda", Incremental: "c1"}},
		{in: "vda,incremental=c1,target=/b/vda", want: BackupDisk{Name: "vda", Incremental: "c1", Target: "/b/vda"}},
		{in: "vda,export=disk0,bitmap=changed", want: BackupDisk{Name: "vda", ExportName: "disk0", ExportBitmap: "changed"}},
		{in: "vda,full,export=disk0", want: BackupDisk{Name: "vda", Full: true, ExportName: "disk0"}},
		// ",," is a literal comma, as in virsh; only the first '=' splits.
		{in: "vda,target=/b/a,,b.qcow2", want: BackupDisk{Name: "vda", Target: "/b/a,b.qcow2"}},
		{in: "vda,export=a=b", want: BackupDisk{Name: "vda", ExportName: "a=b"}},

		{in: "", wantErr: `--disk "": the disk name is empty; write DISK[,KEY=VALUE]..., e.g. vda,target=/backup/vda.qcow2`},
		{in: ",skip", wantErr: `--disk ",skip": the disk name is empty; write DISK[,KEY=VALUE]..., e.g. vda,target=/backup/vda.qcow2`},
		{in: "vda,foo=1", wantErr: `--disk "vda,foo=1": unknown key "foo"; ` + keys},
		{in: "vda,", wantErr: `--disk "vda,": unknown key ""; ` + keys},
		{in: "vda,Target=/x", wantErr: `--disk "vda,Target=/x": unknown key "Target"; ` + keys},
		{in: "vda,target=/a,target=/b", wantErr: `--disk "vda,target=/a,target=/b": target is given twice`},
		{in: "vda,skip,skip", wantErr: `--disk "vda,skip,skip": skip is given twice`},
		{in: "vda,skip=yes", wantErr: `--disk "vda,skip=yes": skip takes no value: write vda,skip`},
		{in: "vda,full=", wantErr: `--disk "vda,full=": full takes no value: write vda,full`},
		{in: "vda,target=", wantErr: `--disk "vda,target=": target needs a value: target=/ABSOLUTE/PATH`},
		{in: "vda,target", wantErr: `--disk "vda,target": target needs a value: target=/ABSOLUTE/PATH`},
		{in: "vda,scratch=", wantErr: `--disk "vda,scratch=": scratch needs a value: scratch=/ABSOLUTE/PATH`},
		{in: "vda,format=", wantErr: `--disk "vda,format=": format needs a value: format=qcow2 or format=raw`},
		{in: "vda,type=", wantErr: `--disk "vda,type=": type needs a value: type=file or type=block`},
		{in: "vda,incremental=", wantErr: `--disk "vda,incremental=": incremental needs a value: incremental=CHECKPOINT`},
		{in: "vda,export=", wantErr: `--disk "vda,export=": export needs a value: export=NAME`},
		{in: "vda,bitmap=", wantErr: `--disk "vda,bitmap=": bitmap needs a value: bitmap=NAME`},
		{in: "vda,skip,target=/b/vda", wantErr: `--disk "vda,skip,target=/b/vda": skip leaves the disk out, so target= means nothing with it; drop one of them`},
		{in: "vda,skip,incremental=c1", wantErr: `--disk "vda,skip,incremental=c1": skip leaves the disk out, so incremental= means nothing with it; drop one of them`},
		{in: "vda,export=e,skip", wantErr: `--disk "vda,export=e,skip": skip leaves the disk out, so export= means nothing with it; drop one of them`},
		{in: "vda,skip,full", wantErr: `--disk "vda,skip,full": skip leaves the disk out and full copies it whole; give one of them`},
		{in: "vda,full,incremental=c1", wantErr: `--disk "vda,full,incremental=c1": full copies the disk whole and incremental= only what changed; give one of them`},
		{in: "vda,incremental=a/b", wantErr: `--disk "vda,incremental=a/b": incremental=a/b does not name a checkpoint: names have only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{in: "vda,target=backup/vda.qcow2", wantErr: `--disk "vda,target=backup/vda.qcow2": target must be an absolute path, not "backup/vda.qcow2"`},
		{in: "vda,target=./vda.qcow2", wantErr: `--disk "vda,target=./vda.qcow2": target must be an absolute path, not "./vda.qcow2"`},
		{in: "vda,target=~/vda.qcow2", wantErr: `--disk "vda,target=~/vda.qcow2": target must be an absolute path, not "~/vda.qcow2"`},
		{in: "vda,scratch=s.qcow2", wantErr: `--disk "vda,scratch=s.qcow2": scratch must be an absolute path, not "s.qcow2"`},
		{in: "vda,target=/backup/", wantErr: `--disk "vda,target=/backup/": target must name a file or a device, not a directory: "/backup/"`},
		{in: "vda,format=vmdk", wantErr: `--disk "vda,format=vmdk": format must be qcow2 or raw, not "vmdk"`},
		{in: "vda,format=QCOW2", wantErr: `--disk "vda,format=QCOW2": format must be qcow2 or raw, not "QCOW2"`},
		{in: "vda,type=network,target=/x", wantErr: `--disk "vda,type=network,target=/x": type must be file or block, not "network"`},
		{in: "vda,type=block", wantErr: `--disk "vda,type=block": type= says what target= or scratch= is; give one of them too`},
		{in: "vda,target=/b/t,scratch=/b/s", wantErr: `--disk "vda,target=/b/t,scratch=/b/s": target= is for a push backup and scratch= for a pull backup; give one of them`},
		{in: "vda,scratch=/b/s,format=raw", wantErr: `--disk "vda,scratch=/b/s,format=raw": format= is a push target's format; a pull backup's scratch is always qcow2`},
		{in: "vda,target=/b/t,export=e", wantErr: `--disk "vda,target=/b/t,export=e": export= and bitmap= are for a pull backup, target= and format= for a push backup; give the keys of one mode`},
		{in: "vda,format=raw,bitmap=b", wantErr: `--disk "vda,format=raw,bitmap=b": export= and bitmap= are for a pull backup, target= and format= for a push backup; give the keys of one mode`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBackupDisk(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseBackupDisk(%q) = %+v, want error %q", tt.in, got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("ParseBackupDisk(%q) error:\n got %s\nwant %s", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBackupDisk(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseBackupDisk(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			// String is what errors and suggestions show back to the user.
			again, err := ParseBackupDisk(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseBackupDisk(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
			}
		})
	}
}
