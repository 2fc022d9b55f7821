package engine

import (
	"context"
	"encoding/json"
	"fmt"

	exportfetch "vbackup/fetch"
)

// A full image that vbackup wrote itself is summed as the copy writes it,
// not read back afterwards (which cost as much as the copy). The checksum
// still has to be what a restore will read, and a restore reads through
// QEMU: so QEMU's own reading of the image's allocation tables (qemu-img
// map) must put every run of data exactly where the copy wrote the bytes
// it summed, and nothing anywhere else. Unallocated parts read as zeroes,
// as the sum has them. Compressed images and the images libvirt writes
// (push) are still read back: their bytes on disk are not the ones summed.

// checkWritten makes sure that image maps its data where the fetch wrote
// it, as w.Layout says.
func checkWritten(ctx context.Context, image string, w exportfetch.DiskResult) error {
	mapped, err := dataRuns(ctx, image)
	if err != nil {
		return err
	}
	laid := w.Layout
	for i := 0; i < max(len(mapped), len(laid)); i++ {
		switch {
		case i >= len(mapped):
			return fmt.Errorf("%s: the copy wrote %d bytes at offset %d (file offset %d) that the image does not map", image, laid[i].Len, laid[i].Off, laid[i].To)
		case i >= len(laid):
			return fmt.Errorf("%s: the image maps %d bytes of data at offset %d (file offset %d) that the copy did not write", image, mapped[i].Len, mapped[i].Off, mapped[i].To)
		case mapped[i] != laid[i]:
			return fmt.Errorf("%s: the image maps %d bytes at offset %d to file offset %d, where the copy put %d bytes at offset %d to file offset %d",
				image, mapped[i].Len, mapped[i].Off, mapped[i].To, laid[i].Len, laid[i].Off, laid[i].To)
		}
	}
	return nil
}

// dataRuns is the runs of data a qcow2 image holds itself, as qemu-img
// reads its tables, adjacent runs merged as the fetch merges its layout.
func dataRuns(ctx context.Context, image string) ([]exportfetch.Placement, error) {
	out, err := qemuImg(ctx, "", "map", "--output=json", "-f", "qcow2", image)
	if err != nil {
		return nil, err
	}
	var extents []struct {
		Start, Length, Offset uint64
		Depth                 int
		Data                  bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		return nil, fmt.Errorf("qemu-img map %s: %w", image, err)
	}
	var runs []exportfetch.Placement
	for _, e := range extents {
		if !e.Data || e.Depth != 0 {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].Off+runs[n-1].Len == e.Start && runs[n-1].To+runs[n-1].Len == e.Offset {
			runs[n-1].Len += e.Length
			continue
		}
		runs = append(runs, exportfetch.Placement{Off: e.Start, Len: e.Length, To: e.Offset})
	}
	return runs, nil
}
