package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	exportfetch "vbackup/fetch"
)

// A full image is trusted to hold what was summed as it was written only
// when QEMU maps every run of data exactly where the copy put it.
func TestCheckWrittenHoldsTheImageToItsLayout(t *testing.T) {
	img := filepath.Join(t.TempDir(), "vda.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x22 1M 64k", "-c", "write -P 0x33 2M 64k", img)
	ctx := context.Background()
	runs, err := dataRuns(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 || runs[0].Off != 0 || runs[0].Len != 128<<10 || runs[1].Off != 1<<20 || runs[2].Off != 2<<20 {
		t.Fatalf("the image's data runs %+v, want three at 0, 1M and 2M", runs)
	}
	if err := checkWritten(ctx, img, exportfetch.DiskResult{Layout: runs}); err != nil {
		t.Errorf("the layout the image has: %v", err)
	}
	for name, laid := range map[string][]exportfetch.Placement{
		"a run put elsewhere in the file": {runs[0], {Off: runs[1].Off, Len: runs[1].Len, To: runs[1].To + 65536}, runs[2]},
		"a run the image does not map":    append(append([]exportfetch.Placement(nil), runs...), exportfetch.Placement{Off: 4 << 20, Len: 65536, To: 1 << 30}),
		"a run the copy did not write":    runs[:2],
		"a shorter run":                   {{Off: 0, Len: 65536, To: runs[0].To}, runs[1], runs[2]},
	} {
		err := checkWritten(ctx, img, exportfetch.DiskResult{Layout: laid})
		if err == nil || !strings.Contains(err.Error(), img) {
			t.Errorf("%s: %v, want an error naming the image", name, err)
		}
	}
}
