package disklayout

import (
	"fmt"
	"io"
	"strings"
)

// Volume is a place on the disk that may hold a filesystem: the whole
// disk, or one partition.
type Volume struct {
	Partition *Partition // nil for the whole disk
	Start     int64
	Size      int64
	FS        Filesystem
}

// Read lists the volumes of a disk of size bytes: the whole disk when a
// filesystem starts at its first byte (a "superfloppy", which an MBR
// check alone would take for a partition table, since a FAT boot sector
// ends as an MBR does), else each partition of its table.
func Read(r io.ReaderAt, size int64) (Table, []Volume, error) {
	whole, err := Probe(r, 0, size)
	if err != nil {
		return Table{}, nil, err
	}
	if whole.Type != "" {
		return Table{}, []Volume{{Start: 0, Size: size, FS: whole}}, nil
	}
	t, err := ReadTable(r, size)
	if err != nil {
		return t, nil, err
	}
	var out []Volume
	for i := range t.Partitions {
		p := &t.Partitions[i]
		fs, err := Probe(r, p.Start, p.Size)
		if err != nil {
			return t, nil, fmt.Errorf("partition %d: %w", p.Number, err)
		}
		out = append(out, Volume{Partition: p, Start: p.Start, Size: p.Size, FS: fs})
	}
	return t, out, nil
}

// Describe is how a volume is named in messages: "partition 2 (xfs
// 'data', 1.0 GiB)".
func (v Volume) Describe(capacity func(uint64) string) string {
	var what []string
	switch {
	case v.FS.Type != "":
		what = append(what, v.FS.Type)
	default:
		what = append(what, "no filesystem known")
	}
	if v.FS.Label != "" {
		what = append(what, fmt.Sprintf("label %q", v.FS.Label))
	}
	what = append(what, capacity(uint64(v.Size)))
	where := "the whole disk"
	if v.Partition != nil {
		where = fmt.Sprintf("partition %d", v.Partition.Number)
	}
	return fmt.Sprintf("%s (%s)", where, strings.Join(what, ", "))
}
