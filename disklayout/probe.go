package disklayout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Filesystem is what the signature at the start of a disk or partition
// says it holds.
type Filesystem struct {
	Type  string // "ext4", "xfs", "vfat", ... or "" for nothing known
	Label string
	// Mountable says vbackup can mount it: ext2/3/4, xfs, vfat.
	Mountable bool
	// NeedsRecovery says the filesystem was not cleanly unmounted or
	// frozen: its journal must be replayed before it is consistent (ext3
	// and ext4 keep that flag in the superblock; for the others only a
	// mount tells).
	NeedsRecovery bool
}

// MountType is the type to give mount(8).
func (f Filesystem) MountType() string {
	if strings.HasPrefix(f.Type, "ext") {
		return "ext4" // the ext4 driver mounts ext2 and ext3 too
	}
	return f.Type
}

// Probe reads the signature of the filesystem (or other content) that
// starts at off, in a region of size bytes.
func Probe(r io.ReaderAt, off, size int64) (Filesystem, error) {
	// 68 KiB covers every signature read here (btrfs's is at 64 KiB).
	n := min(size, 68<<10)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
		return Filesystem{}, fmt.Errorf("reading byte %d: %w", off, err)
	}
	at := func(pos int, sig string) bool {
		return pos+len(sig) <= len(buf) && string(buf[pos:pos+len(sig)]) == sig
	}
	switch {
	case len(buf) >= 2048 && binary.LittleEndian.Uint16(buf[1024+0x38:]) == 0xef53:
		return probeExt(buf[1024:2048]), nil
	case at(0, "XFSB"):
		return Filesystem{Type: "xfs", Label: cString(buf[108:120]), Mountable: true}, nil
	case isFAT(buf):
		return probeFAT(buf), nil
	case at(3, "NTFS    "):
		return Filesystem{Type: "ntfs"}, nil
	case at(0, "LUKS\xba\xbe"):
		return Filesystem{Type: "crypto_LUKS"}, nil
	case at(512, "LABELONE") && at(512+24, "LVM2"):
		return Filesystem{Type: "LVM2_member"}, nil
	case at(0x10040, "_BHRfS_M"):
		return Filesystem{Type: "btrfs", Label: cString(buf[0x1012b:min(len(buf), 0x1012b+256)])}, nil
	case at(4096-10, "SWAPSPACE2") || at(4096-10, "SWAP-SPACE"):
		return Filesystem{Type: "swap"}, nil
	case at(0x8001, "CD001"):
		return Filesystem{Type: "iso9660"}, nil
	case at(0, "hsqs"):
		return Filesystem{Type: "squashfs"}, nil
	}
	return Filesystem{}, nil
}

// ext superblock fields (offsets in the superblock).
const (
	extFeatureCompat   = 0x5c
	extFeatureIncompat = 0x60
	extVolumeName      = 0x78

	extCompatHasJournal   = 0x4
	extIncompatRecover    = 0x4
	extIncompatJournalDev = 0x8
	extIncompatExtents    = 0x40
	extIncompat64bit      = 0x80
	extIncompatFlexBg     = 0x200
)

func probeExt(sb []byte) Filesystem {
	compat := binary.LittleEndian.Uint32(sb[extFeatureCompat:])
	incompat := binary.LittleEndian.Uint32(sb[extFeatureIncompat:])
	f := Filesystem{Label: cString(sb[extVolumeName : extVolumeName+16]), Mountable: true}
	switch {
	case incompat&extIncompatJournalDev != 0:
		return Filesystem{Type: "jbd", Label: f.Label} // an external journal, not a filesystem
	case incompat&(extIncompatExtents|extIncompat64bit|extIncompatFlexBg) != 0:
		f.Type = "ext4"
	case compat&extCompatHasJournal != 0:
		f.Type = "ext3"
	default:
		f.Type = "ext2"
	}
	f.NeedsRecovery = incompat&extIncompatRecover != 0
	return f
}

// isFAT recognises a FAT boot sector: a jump instruction, the boot
// signature, and the type string of FAT12/16 or FAT32.
func isFAT(b []byte) bool {
	if len(b) < 512 || (b[0] != 0xeb && b[0] != 0xe9) || b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	return bytes.HasPrefix(b[54:], []byte("FAT1")) || bytes.HasPrefix(b[82:], []byte("FAT32"))
}

func probeFAT(b []byte) Filesystem {
	label := b[43:54]
	if bytes.HasPrefix(b[82:], []byte("FAT32")) {
		label = b[71:82]
	}
	l := strings.TrimRight(string(label), " \x00")
	if l == "NO NAME" {
		l = ""
	}
	return Filesystem{Type: "vfat", Label: l, Mountable: true}
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}
