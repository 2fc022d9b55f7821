package xmlgen

import (
	"reflect"
	"testing"

	"vbackup/virt"
)

var (
	qcow2A  = virt.Disk{Target: "vda", Device: "disk", Type: "file", Source: "/img/a.qcow2", Format: "qcow2"}
	qcow2B  = virt.Disk{Target: "vdb", Device: "disk", Type: "file", Source: "/img/b.qcow2", Format: "qcow2"}
	rawB    = virt.Disk{Target: "vdb", Device: "disk", Type: "block", Source: "/dev/vg/b", Format: "raw"}
	rawC    = virt.Disk{Target: "vdc", Device: "disk", Type: "file", Source: "/img/c.raw", Format: "raw"}
	unknown = virt.Disk{Target: "vdd", Device: "disk", Type: "network", Source: "pool/d"} // format not in the XML
	roC     = virt.Disk{Target: "vdc", Device: "disk", Type: "file", Source: "/img/c.qcow2", Format: "qcow2", ReadOnly: true}
	cdrom   = virt.Disk{Target: "sda", Device: "cdrom", Type: "file", Format: "raw", ReadOnly: true} // ejected
	iso     = virt.Disk{Target: "sdb", Device: "cdrom", Type: "file", Source: "/iso/x.iso", Format: "raw", ReadOnly: true}
)

func TestAlignCheckpointDisks(t *testing.T) {
	tests := []struct {
		name      string
		diskspecs []string
		disks     []virt.Disk
		want      []DiskSpec // nil: libvirt's default, no <disks>
		wantNotes []string
		wantErr   string
	}{
		{
			name:  "every disk can: libvirt's default",
			disks: []virt.Disk{qcow2A, qcow2B, unknown},
		},
		{
			name:  "raw disk left out explicitly",
			disks: []virt.Disk{qcow2A, rawB},
			want:  []DiskSpec{{Name: "vda", Checkpoint: "bitmap"}, {Name: "vdb", Checkpoint: "no"}},
			wantNotes: []string{
				"disk vdb (raw) cannot carry a bitmap: left out of this checkpoint",
			},
		},
		{
			name:  "empty, read-only and raw left out; only the raw one is news",
			disks: []virt.Disk{cdrom, qcow2A, roC, iso, rawB},
			want: []DiskSpec{
				{Name: "sda", Checkpoint: "no"},
				{Name: "vda", Checkpoint: "bitmap"},
				{Name: "vdc", Checkpoint: "no"},
				{Name: "sdb", Checkpoint: "no"},
				{Name: "vdb", Checkpoint: "no"},
			},
			wantNotes: []string{
				"disk vdb (raw) cannot carry a bitmap: left out of this checkpoint",
			},
		},
		{
			// libvirt leaves an empty CD-ROM out by itself: keep its default.
			name:  "a CD-ROM beside a qcow2 disk changes nothing",
			disks: []virt.Disk{cdrom, qcow2A, roC},
		},
		{
			name:    "no disk can",
			disks:   []virt.Disk{rawB, cdrom, roC},
			wantErr: "no disk of the domain can carry a checkpoint bitmap (vdb is raw, sda is empty, vdc is read-only): only writable qcow2 disks can",
		},
		{
			name:      "no disk can, even though the user left them all out",
			diskspecs: []string{"vdb,checkpoint=no"},
			disks:     []virt.Disk{rawB},
			wantErr:   "no disk of the domain can carry a checkpoint bitmap (vdb is raw): only writable qcow2 disks can",
		},
		{
			name:    "no disks at all",
			wantErr: "domain has no disks: a checkpoint needs at least one disk",
		},
		{
			name:      "unknown disk",
			diskspecs: []string{"vdz"},
			disks:     []virt.Disk{qcow2A, rawB},
			wantErr:   `domain has no disk "vdz"; its disks are vda, vdb`,
		},
		{
			name:      "disk named twice",
			diskspecs: []string{"vda", "vda,checkpoint=no"},
			disks:     []virt.Disk{qcow2A, qcow2B},
			wantErr:   `disk "vda" is named twice by --diskspec; name each disk once`,
		},
		{
			name:      "disk named twice, once by its path",
			diskspecs: []string{"/img/a.qcow2", "vda,bitmap=x"},
			disks:     []virt.Disk{qcow2A, qcow2B},
			wantErr:   `disk "vda" is named twice by --diskspec; name each disk once`,
		},
		{
			name:      "bitmap asked on a raw disk",
			diskspecs: []string{"vda", "vdb,checkpoint=bitmap"},
			disks:     []virt.Disk{qcow2A, rawB},
			wantErr:   `disk "vdb" is raw: only qcow2 disks can carry a checkpoint bitmap; leave it out with --diskspec vdb,checkpoint=no`,
		},
		{
			name:      "no checkpoint= means bitmap",
			diskspecs: []string{"vdb,bitmap=b1"},
			disks:     []virt.Disk{qcow2A, rawB},
			wantErr:   `disk "vdb" is raw: only qcow2 disks can carry a checkpoint bitmap; leave it out with --diskspec vdb,checkpoint=no`,
		},
		{
			name:      "bitmap asked on a read-only disk",
			diskspecs: []string{"vdc"},
			disks:     []virt.Disk{qcow2A, roC},
			wantErr:   `disk "vdc" is read-only: only writable disks can carry a checkpoint bitmap; leave it out with --diskspec vdc,checkpoint=no`,
		},
		{
			name:      "bitmap asked on an empty drive",
			diskspecs: []string{"sda"},
			disks:     []virt.Disk{qcow2A, cdrom},
			wantErr:   `disk "sda" is empty (no medium): an empty drive cannot carry a checkpoint bitmap; leave it out with --diskspec sda,checkpoint=no`,
		},
		{
			name:      "every disk left out",
			diskspecs: []string{"vda,checkpoint=no"},
			disks:     []virt.Disk{qcow2A, rawB},
			wantErr:   "every disk has checkpoint=no, so this checkpoint would track nothing; give at least one disk a bitmap with --diskspec DISK,checkpoint=bitmap",
		},
		{
			name:      "unnamed disks get checkpoint=no, a note for those that could have had a bitmap",
			diskspecs: []string{"vdb,bitmap=b1"},
			disks:     []virt.Disk{qcow2A, qcow2B, rawC, cdrom},
			want: []DiskSpec{
				{Name: "vda", Checkpoint: "no"},
				{Name: "vdb", Bitmap: "b1"},
				{Name: "vdc", Checkpoint: "no"},
				{Name: "sda", Checkpoint: "no"},
			},
			wantNotes: []string{"disk vda is not named by --diskspec: left out of this checkpoint"},
		},
		{
			name:      "raw disk left out by the user: no note",
			diskspecs: []string{"vdb,checkpoint=no", "vda,checkpoint=bitmap"},
			disks:     []virt.Disk{qcow2A, rawB},
			want:      []DiskSpec{{Name: "vda", Checkpoint: "bitmap"}, {Name: "vdb", Checkpoint: "no"}},
		},
		{
			name:      "a source path is named by its target",
			diskspecs: []string{"/img/b.qcow2,bitmap=nightly", "vda"},
			disks:     []virt.Disk{qcow2A, qcow2B},
			want:      []DiskSpec{{Name: "vda"}, {Name: "vdb", Bitmap: "nightly"}},
		},
		{
			name:      "a path two disks share names neither",
			diskspecs: []string{"/img/a.qcow2"},
			disks:     []virt.Disk{qcow2A, {Target: "vdb", Source: "/img/a.qcow2", Format: "qcow2", ReadOnly: true}},
			wantErr:   `domain has no disk "/img/a.qcow2"; its disks are vda, vdb`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := CheckpointSpec{Name: "c1", Description: "d"}
			for _, s := range tt.diskspecs {
				d, err := ParseDiskSpec(s)
				if err != nil {
					t.Fatal(err)
				}
				spec.Disks = append(spec.Disks, d)
			}
			got, notes, err := AlignCheckpointDisks(spec, tt.disks)
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
			if got.Name != spec.Name || got.Description != spec.Description {
				t.Errorf("name and description changed: %q %q", got.Name, got.Description)
			}
			if !reflect.DeepEqual(got.Disks, tt.want) {
				t.Errorf("disks:\n got %+v\nwant %+v", got.Disks, tt.want)
			}
			if !reflect.DeepEqual(notes, tt.wantNotes) {
				t.Errorf("notes:\n got %q\nwant %q", notes, tt.wantNotes)
			}
		})
	}
}
