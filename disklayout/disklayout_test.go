package disklayout

import (
	"encoding/binary"
	"strings"
	"testing"
	"unicode/utf16"
)

// disk is an in-memory disk image.
type disk []byte

func (d disk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d)) {
		return 0, nil
	}
	return copy(p, d[off:]), nil
}

func newDisk(size int) disk { return make(disk, size) }

func (d disk) mbrEntry(sector int64, i int, kind byte, start, count uint32) {
	e := d[sector*SectorSize+446+int64(16*i):]
	e[4] = kind
	binary.LittleEndian.PutUint32(e[8:], start)
	binary.LittleEndian.PutUint32(e[12:], count)
	d[sector*SectorSize+510], d[sector*SectorSize+511] = 0x55, 0xaa
}

func (d disk) ext(off int64, label string, incompat uint32) {
	sb := d[off+1024:]
	binary.LittleEndian.PutUint16(sb[0x38:], 0xef53)
	binary.LittleEndian.PutUint32(sb[0x5c:], 0x4) // has_journal
	binary.LittleEndian.PutUint32(sb[0x60:], incompat)
	copy(sb[0x78:], label)
}

func (d disk) xfs(off int64, label string) {
	copy(d[off:], "XFSB")
	copy(d[off+108:], label)
}

func (d disk) fat32(off int64, label string) {
	d[off] = 0xeb
	copy(d[off+71:], label)
	copy(d[off+82:], "FAT32   ")
	d[off+510], d[off+511] = 0x55, 0xaa
}

func TestMBRWithLogicalPartitions(t *testing.T) {
	d := newDisk(64 << 20)
	d.mbrEntry(0, 0, 0x83, 2048, 20480)  // 1: ext4
	d.mbrEntry(0, 1, 0x05, 24576, 81920) // extended
	d.mbrEntry(24576, 0, 0x83, 2048, 8192)
	d.mbrEntry(24576, 1, 0x05, 12288, 16384) // next EBR, relative to the extended partition
	d.mbrEntry(24576+12288, 0, 0x0c, 2048, 8192)
	d.ext(2048*512, "root", extIncompatExtents)
	d.xfs((24576+2048)*512, "data")
	d.fat32((24576+12288+2048)*512, "BOOT       ")

	table, vols, err := Read(d, int64(len(d)))
	if err != nil {
		t.Fatal(err)
	}
	if table.Kind != "mbr" {
		t.Fatalf("kind %q", table.Kind)
	}
	want := []struct {
		n          int
		start, sz  int64
		fs, label  string
		mountable  bool
		recovering bool
	}{
		{1, 2048 * 512, 20480 * 512, "ext4", "root", true, false},
		{5, (24576 + 2048) * 512, 8192 * 512, "xfs", "data", true, false},
		{6, (24576 + 12288 + 2048) * 512, 8192 * 512, "vfat", "BOOT", true, false},
	}
	if len(vols) != len(want) {
		t.Fatalf("volumes %+v", vols)
	}
	for i, w := range want {
		v := vols[i]
		if v.Partition.Number != w.n || v.Start != w.start || v.Size != w.sz || v.FS.Type != w.fs || v.FS.Label != w.label || v.FS.Mountable != w.mountable {
			t.Errorf("volume %d: %+v %+v, want %+v", i, v.Partition, v.FS, w)
		}
	}
}

func TestGPT(t *testing.T) {
	d := newDisk(32 << 20)
	d.mbrEntry(0, 0, 0xee, 1, 65535)
	hdr := d[512:]
	copy(hdr, "EFI PART")
	binary.LittleEndian.PutUint64(hdr[72:], 2)
	binary.LittleEndian.PutUint32(hdr[80:], 128)
	binary.LittleEndian.PutUint32(hdr[84:], 128)
	linux := []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	for i, p := range []struct {
		first, last uint64
		name        string
	}{{2048, 4095, "swap"}, {4096, 32767, "root"}} {
		e := d[2*512+128*i:]
		copy(e, linux)
		e[16] = 1 // a unique GUID
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, c := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}
	copy(d[2048*512+4096-10:], "SWAPSPACE2")
	d.ext(4096*512, "root", extIncompatExtents|extIncompatRecover)
	table, vols, err := Read(d, int64(len(d)))
	if err != nil {
		t.Fatal(err)
	}
	if table.Kind != "gpt" || len(vols) != 2 {
		t.Fatalf("table %+v, volumes %+v", table, vols)
	}
	if p := vols[0].Partition; p.Number != 1 || p.Name != "swap" || p.Type != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" || vols[0].FS.Type != "swap" || vols[0].FS.Mountable {
		t.Errorf("partition 1: %+v %+v", p, vols[0].FS)
	}
	if v := vols[1]; v.Partition.Number != 2 || v.Start != 4096*512 || v.Size != 28672*512 || v.FS.Type != "ext4" || !v.FS.NeedsRecovery {
		t.Errorf("partition 2: %+v %+v", v.Partition, v.FS)
	}
	if got := vols[1].Describe(func(n uint64) string { return "14 MiB" }); got != `partition 2 (ext4, label "root", 14 MiB)` {
		t.Errorf("Describe: %s", got)
	}
}

// A FAT boot sector ends in 55 aa as an MBR does: a whole-disk vfat is
// one filesystem, not a partition table.
func TestWholeDiskFilesystems(t *testing.T) {
	for _, c := range []struct {
		name  string
		make  func(d disk)
		fs    Filesystem
		table bool
	}{
		{"vfat", func(d disk) { d.fat32(0, "NO NAME    ") }, Filesystem{Type: "vfat", Mountable: true}, false},
		{"fat16", func(d disk) {
			d[0] = 0xeb
			copy(d[43:], "LABEL16    ")
			copy(d[54:], "FAT16   ")
			d[510], d[511] = 0x55, 0xaa
		}, Filesystem{Type: "vfat", Label: "LABEL16", Mountable: true}, false},
		{"ext2", func(d disk) { d.ext(0, "old", 0); binary.LittleEndian.PutUint32(d[1024+0x5c:], 0) }, Filesystem{Type: "ext2", Label: "old", Mountable: true}, false},
		{"ext3", func(d disk) { d.ext(0, "j", 0) }, Filesystem{Type: "ext3", Label: "j", Mountable: true}, false},
		{"xfs", func(d disk) { d.xfs(0, "x") }, Filesystem{Type: "xfs", Label: "x", Mountable: true}, false},
		{"lvm", func(d disk) { copy(d[512:], "LABELONE"); copy(d[512+24:], "LVM2 001") }, Filesystem{Type: "LVM2_member"}, false},
		{"luks", func(d disk) { copy(d, "LUKS\xba\xbe") }, Filesystem{Type: "crypto_LUKS"}, false},
		{"btrfs", func(d disk) { copy(d[0x10040:], "_BHRfS_M"); copy(d[0x1012b:], "bt") }, Filesystem{Type: "btrfs", Label: "bt"}, false},
		{"empty", func(d disk) {}, Filesystem{}, false},
	} {
		d := newDisk(1 << 20)
		c.make(d)
		table, vols, err := Read(d, int64(len(d)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if table.Kind != "" {
			t.Errorf("%s: read as a %s table", c.name, table.Kind)
		}
		if c.name == "empty" {
			if len(vols) != 0 {
				t.Errorf("empty: volumes %+v", vols)
			}
			continue
		}
		if len(vols) != 1 || vols[0].Partition != nil || vols[0].FS != c.fs || vols[0].Size != int64(len(d)) {
			t.Errorf("%s: volumes %+v, want the whole disk with %+v", c.name, vols, c.fs)
		}
	}
	if (Filesystem{Type: "ext3"}).MountType() != "ext4" || (Filesystem{Type: "xfs"}).MountType() != "xfs" {
		t.Errorf("MountType")
	}
}

func TestDamagedTables(t *testing.T) {
	past := newDisk(1 << 20)
	past.mbrEntry(0, 0, 0x83, 2048, 1<<20)
	self := newDisk(1 << 20)
	self.mbrEntry(0, 0, 0x05, 100, 1000)
	self.mbrEntry(100, 1, 0x05, 1, 10)
	self.mbrEntry(101, 1, 0x05, 1, 10) // 101 -> 101 -> ...
	noGPT := newDisk(1 << 20)
	noGPT.mbrEntry(0, 0, 0xee, 1, 2000)
	for _, c := range []struct {
		name string
		d    disk
		want string
	}{
		{"past the end", past, "partition 1 (bytes 1048576-537919488) goes past the end of the disk"},
		{"a loop", self, "the extended partition's chain loops"},
		{"no GPT header", noGPT, "LBA 1 holds no GPT header"},
	} {
		_, _, err := Read(c.d, int64(len(c.d)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
