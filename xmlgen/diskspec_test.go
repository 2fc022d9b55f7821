package xmlgen

import "testing"

func TestParseDiskSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    DiskSpec
		wantErr string
	}{
		{in: "vda", want: DiskSpec{Name: "vda"}},
		{in: "vda,checkpoint=bitmap", want: DiskSpec{Name: "vda", Checkpoint: "bitmap"}},
		{in: "vda,checkpoint=no", want: DiskSpec{Name: "vda", Checkpoint: "no"}},
		{in: "vda,bitmap=b1", want: DiskSpec{Name: "vda", Bitmap: "b1"}},
		{in: "vda,checkpoint=bitmap,bitmap=b1", want: DiskSpec{Name: "vda", Checkpoint: "bitmap", Bitmap: "b1"}},
		{in: "vda,bitmap=b1,checkpoint=bitmap", want: DiskSpec{Name: "vda", Checkpoint: "bitmap", Bitmap: "b1"}},
		// ",," is a literal comma, in the name as in a value, as in virsh.
		{in: "/img/a,,b.qcow2,bitmap=x,,y", want: DiskSpec{Name: "/img/a,b.qcow2", Bitmap: "x,y"}},
		{in: "vda,,,checkpoint=no", want: DiskSpec{Name: "vda,", Checkpoint: "no"}},
		{in: "vda,bitmap=a=b", want: DiskSpec{Name: "vda", Bitmap: "a=b"}},

		{in: "", wantErr: `--diskspec "": the disk name is empty; write DISK[,checkpoint=bitmap|no][,bitmap=NAME]`},
		{in: ",checkpoint=no", wantErr: `--diskspec ",checkpoint=no": the disk name is empty; write DISK[,checkpoint=bitmap|no][,bitmap=NAME]`},
		{in: "vda,checkpoint=yes", wantErr: `--diskspec "vda,checkpoint=yes": checkpoint must be "bitmap" or "no"`},
		{in: "vda,checkpoint=default", wantErr: `--diskspec "vda,checkpoint=default": checkpoint must be "bitmap" or "no"`},
		{in: "vda,checkpoint=Bitmap", wantErr: `--diskspec "vda,checkpoint=Bitmap": checkpoint must be "bitmap" or "no"`},
		{in: "vda,checkpoint=", wantErr: `--diskspec "vda,checkpoint=": checkpoint needs a value: checkpoint=bitmap or checkpoint=no`},
		{in: "vda,checkpoint", wantErr: `--diskspec "vda,checkpoint": checkpoint needs a value: checkpoint=bitmap or checkpoint=no`},
		{in: "vda,bitmap=", wantErr: `--diskspec "vda,bitmap=": bitmap needs a name: bitmap=NAME`},
		{in: "vda,snapshot=external", wantErr: `--diskspec "vda,snapshot=external": unknown key "snapshot"; the keys are checkpoint and bitmap (DISK[,checkpoint=bitmap|no][,bitmap=NAME])`},
		{in: "vda,", wantErr: `--diskspec "vda,": unknown key ""; the keys are checkpoint and bitmap (DISK[,checkpoint=bitmap|no][,bitmap=NAME])`},
		{in: "vda,checkpoint=no,checkpoint=bitmap", wantErr: `--diskspec "vda,checkpoint=no,checkpoint=bitmap": checkpoint is given twice`},
		{in: "vda,bitmap=a,bitmap=b", wantErr: `--diskspec "vda,bitmap=a,bitmap=b": bitmap is given twice`},
		{in: "vda,checkpoint=no,bitmap=b1", wantErr: `--diskspec "vda,checkpoint=no,bitmap=b1": bitmap= names the disk's bitmap, but checkpoint=no gives it none; drop one of them`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDiskSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseDiskSpec(%q) = %+v, want error %q", tt.in, got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("ParseDiskSpec(%q) error:\n got %s\nwant %s", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDiskSpec(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseDiskSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			// String is what notes and errors show back to the user.
			again, err := ParseDiskSpec(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseDiskSpec(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), again, err, got)
			}
		})
	}
}
