package xmlgen

import (
	"flag"
	"testing"

	"vbackup/virt"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/xmlgen")

const goldenDir = "../testdata/xmlgen"

func diskSpecs(t *testing.T, args ...string) []DiskSpec {
	t.Helper()
	var ds []DiskSpec
	for _, a := range args {
		d, err := ParseDiskSpec(a)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func aligned(t *testing.T, spec CheckpointSpec, disks ...virt.Disk) CheckpointSpec {
	t.Helper()
	spec, _, err := AlignCheckpointDisks(spec, disks)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestCheckpointXMLGolden(t *testing.T) {
	tests := []struct {
		golden string
		spec   CheckpointSpec
	}{
		{"checkpoint-empty.xml", CheckpointSpec{}},
		{"checkpoint-name.xml", CheckpointSpec{Name: "nightly-2024.06.01", Description: "before the upgrade"}},
		{"checkpoint-escaped.xml", CheckpointSpec{
			Name:        "c1",
			Description: `<full> & "nightly" 'run'`,
			Disks:       diskSpecs(t, "/var/lib/libvirt/images/a,,b.qcow2,bitmap=x<&>y"),
		}},
		{"checkpoint-diskspecs.xml", CheckpointSpec{
			Name:  "c1",
			Disks: diskSpecs(t, "vda,bitmap=b1", "vdb,checkpoint=no", "vdc,checkpoint=bitmap"),
		}},
		{"checkpoint-aligned-raw.xml", aligned(t, CheckpointSpec{Name: "c1"}, qcow2A, rawB, cdrom)},
		{"checkpoint-aligned-named.xml", aligned(t,
			CheckpointSpec{Name: "c1", Disks: diskSpecs(t, "/img/b.qcow2,bitmap=b1")}, qcow2A, qcow2B)},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := CheckpointXML(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			assertGolden(t, tt.golden, got, "domaincheckpoint")
		})
	}
}

func TestCheckpointXMLErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    CheckpointSpec
		wantErr string
	}{
		{"slash in name", CheckpointSpec{Name: "a/b"},
			`checkpoint name "a/b": use only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{"leading dot", CheckpointSpec{Name: ".c1"},
			`checkpoint name ".c1": use only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{"space in name", CheckpointSpec{Name: "c 1"},
			`checkpoint name "c 1": use only letters, digits, '_', '-' and '.', and do not start with '.'`},
		{"bad checkpoint value", CheckpointSpec{Disks: []DiskSpec{{Name: "vda", Checkpoint: "yes"}}},
			`disk "vda": checkpoint must be "bitmap" or "no"`},
		{"bitmap with checkpoint=no", CheckpointSpec{Disks: []DiskSpec{{Name: "vda", Checkpoint: "no", Bitmap: "b"}}},
			`disk "vda": bitmap= names the disk's bitmap, but checkpoint=no gives it none; drop one of them`},
		{"no disk name", CheckpointSpec{Disks: []DiskSpec{{Checkpoint: "no"}}},
			`disk "": the disk name is empty; write DISK[,checkpoint=bitmap|no][,bitmap=NAME]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := CheckpointXML(tt.spec)
			if err == nil {
				t.Fatalf("got no error, want %q; document:\n%s", tt.wantErr, doc)
			}
			if err.Error() != tt.wantErr {
				t.Fatalf("error:\n got %s\nwant %s", err, tt.wantErr)
			}
		})
	}
}
