package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/contentsum"
	"vbackup/internal/testbed"
)

// A fetch that sums as it writes gives the checksum that reading the file
// back gives, with every chunk's digest, and says where the data went as
// the file's own map (qemu-img's reading of it) has it.
func TestFetchSumsWhatItWrites(t *testing.T) {
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	// Not a whole number of clusters; data that straddles clusters, chunks
	// and a 512 MiB L2 region; zeroes written inside data.
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1073743360")
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1000 5000", "-c", "write -P 0x22 100M 3M",
		"-c", "write -P 0x33 511M 2M", "-c", "write -z 200M 1M", "-c", "write -P 0x55 300M 1M",
		"-c", "write -z 300M 128k", "-c", "write -P 0x44 1G 1536", img)
	want, err := contentsum.File(context.Background(), img, "qcow2", contentsum.Options{})
	if err != nil {
		t.Fatal(err)
	}
	uri, stop := qemuNBD(t, img)
	defer stop()
	for _, format := range []string{"raw", "qcow2"} {
		out := filepath.Join(dir, "full."+format)
		r := fetchOne(t, Disk{Name: "vda", URI: uri, Path: out, Format: format, Sum: true})
		var readBack bytes.Buffer
		back, err := contentsum.File(context.Background(), out, format, contentsum.Options{Digests: &readBack})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Sum.Equal(want) || !back.Equal(want) || r.Sum.Size != want.Size {
			t.Errorf("%s: summed as written %v (%d bytes), read back %v, the disk %v", format, r.Sum, r.Sum.Size, back, want)
		}
		if !bytes.Equal(r.Digests, readBack.Bytes()) {
			t.Errorf("%s: %d bytes of chunk digests, not those read back (%d bytes)", format, len(r.Digests), readBack.Len())
		}
		if format == "raw" {
			if r.Layout != nil {
				t.Errorf("raw: a layout %v for a file that is the disk", r.Layout)
			}
			continue
		}
		if got, laid := dataMap(t, out), r.Layout; !equalRuns(got, laid) {
			t.Errorf("qcow2: laid out\n%v\nbut the file maps\n%v", laid, got)
		}
	}
}

func TestFetchSumRefusesWhatItCannotSum(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []Disk{
		{Name: "vda", Path: filepath.Join(dir, "a.qcow2"), Format: "qcow2", Sum: true, Compress: "zstd"},
	} {
		if _, err := createTarget(d.Path, d, 1<<20, false); err == nil || !strings.Contains(err.Error(), "read it back") {
			t.Errorf("%+v: %v, want a refusal", d, err)
		}
	}
}

// dataMap is the runs of data a qcow2 image holds itself, by qemu-img.
func dataMap(t *testing.T, img string) []Placement {
	out := testbed.Run(t, "qemu-img", "map", "--output=json", "-f", "qcow2", img)
	var extents []struct {
		Start, Length, Offset uint64
		Depth                 int
		Data                  bool
	}
	if err := json.Unmarshal([]byte(out), &extents); err != nil {
		t.Fatal(err)
	}
	var runs []Placement
	for _, e := range extents {
		if e.Data && e.Depth == 0 {
			runs = addPlacement(runs, Placement{Off: e.Start, Len: e.Length, To: e.Offset})
		}
	}
	return runs
}

func equalRuns(a, b []Placement) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
