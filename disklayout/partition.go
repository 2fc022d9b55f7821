// Package disklayout reads what a disk image holds: its partition table
// (MBR, with logical partitions, or GPT) and the filesystem signatures of
// the disk or of each partition, from an io.ReaderAt over the disk's
// bytes. It only reads; it runs no tool, so that what vbackup mounts is
// decided by code it can test.
package disklayout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
)

// SectorSize is the logical sector size partition tables are read with:
// that of virtual disks (virtio-blk and SCSI default to 512).
const SectorSize = 512

// Partition is one entry of a partition table.
type Partition struct {
	Number int    // as Linux numbers it: 1-4 primary (MBR) or GPT order, 5+ logical
	Start  int64  // byte offset on the disk
	Size   int64  // bytes
	Type   string // the MBR type byte ("0x83") or the GPT type GUID
	Name   string // the GPT partition name, if any
}

// Table is a disk's partition table.
type Table struct {
	Kind       string // "gpt", "mbr", or "" when the disk has none
	Partitions []Partition
}

// ReadTable reads the partition table of a disk of size bytes. A disk
// with neither an MBR nor a GPT gives an empty Table.
func ReadTable(r io.ReaderAt, size int64) (Table, error) {
	mbr := make([]byte, SectorSize)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return Table{}, fmt.Errorf("reading the first sector: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return Table{}, nil
	}
	entries, ok := mbrEntries(mbr)
	if !ok {
		return Table{}, nil
	}
	for _, e := range entries {
		if e.kind == 0xee {
			parts, err := readGPT(r, size)
			if err != nil {
				return Table{}, err
			}
			return Table{Kind: "gpt", Partitions: parts}, nil
		}
	}
	var parts []Partition
	for i, e := range entries {
		if e.kind == 0 || e.count == 0 {
			continue
		}
		start, n := int64(e.start)*SectorSize, int64(e.count)*SectorSize
		if isExtended(e.kind) {
			logical, err := readLogical(r, start, size)
			if err != nil {
				return Table{}, err
			}
			parts = append(parts, logical...)
			continue
		}
		parts = append(parts, Partition{Number: i + 1, Start: start, Size: n, Type: fmt.Sprintf("0x%02x", e.kind)})
	}
	if err := checkBounds(parts, size); err != nil {
		return Table{}, err
	}
	return Table{Kind: "mbr", Partitions: parts}, nil
}

type mbrEntry struct {
	kind         byte
	start, count uint32
}

// mbrEntries reads the four primary entries; ok is false when the sector
// is not a partition table (a status byte other than 0x00 or 0x80, as in
// a filesystem's boot sector, which also ends in 55 aa).
func mbrEntries(sector []byte) (out [4]mbrEntry, ok bool) {
	for i := range out {
		e := sector[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return out, false
		}
		out[i] = mbrEntry{kind: e[4], start: binary.LittleEndian.Uint32(e[8:]), count: binary.LittleEndian.Uint32(e[12:])}
	}
	return out, true
}

func isExtended(kind byte) bool { return kind == 0x05 || kind == 0x0f || kind == 0x85 }

// maxLogical bounds the chain of extended boot records: a loop in a
// damaged table must not hang vbackup.
const maxLogical = 128

// readLogical follows the chain of extended boot records from the
// extended partition at ext: each holds one logical partition (its start
// relative to that record) and the next record (relative to ext).
func readLogical(r io.ReaderAt, ext, size int64) ([]Partition, error) {
	var out []Partition
	ebr := ext
	sector := make([]byte, SectorSize)
	for n := 5; n < 5+maxLogical; n++ {
		if _, err := r.ReadAt(sector, ebr); err != nil {
			return nil, fmt.Errorf("reading the extended boot record at byte %d: %w", ebr, err)
		}
		entries, ok := mbrEntries(sector)
		if sector[510] != 0x55 || sector[511] != 0xaa || !ok {
			return nil, fmt.Errorf("the extended boot record at byte %d is damaged", ebr)
		}
		if e := entries[0]; e.kind != 0 && e.count != 0 {
			out = append(out, Partition{Number: n, Start: ebr + int64(e.start)*SectorSize, Size: int64(e.count) * SectorSize, Type: fmt.Sprintf("0x%02x", e.kind)})
		}
		next := entries[1]
		if next.kind == 0 || next.start == 0 {
			return out, nil
		}
		ebr = ext + int64(next.start)*SectorSize
		if ebr >= size {
			return nil, fmt.Errorf("the extended boot record chain points past the end of the disk (byte %d)", ebr)
		}
	}
	return nil, fmt.Errorf("more than %d logical partitions: the extended partition's chain loops", maxLogical)
}

var gptSignature = []byte("EFI PART")

// readGPT reads the primary GPT header at LBA 1 and its entries.
func readGPT(r io.ReaderAt, size int64) ([]Partition, error) {
	hdr := make([]byte, SectorSize)
	if _, err := r.ReadAt(hdr, SectorSize); err != nil {
		return nil, fmt.Errorf("reading the GPT header: %w", err)
	}
	if !bytes.Equal(hdr[:8], gptSignature) {
		return nil, errors.New("the MBR announces a GPT, but LBA 1 holds no GPT header")
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
	count := binary.LittleEndian.Uint32(hdr[80:])
	entrySize := binary.LittleEndian.Uint32(hdr[84:])
	if entrySize < 128 || entrySize > 4096 || count > 4096 {
		return nil, fmt.Errorf("the GPT header is damaged (%d entries of %d bytes)", count, entrySize)
	}
	buf := make([]byte, int64(count)*int64(entrySize))
	if _, err := r.ReadAt(buf, entriesLBA*SectorSize); err != nil {
		return nil, fmt.Errorf("reading the GPT entries: %w", err)
	}
	var out []Partition
	for i := range int(count) {
		e := buf[i*int(entrySize) : (i+1)*int(entrySize)]
		typ := e[:16]
		if bytes.Equal(typ, make([]byte, 16)) {
			continue
		}
		first, last := int64(binary.LittleEndian.Uint64(e[32:])), int64(binary.LittleEndian.Uint64(e[40:]))
		if last < first {
			return nil, fmt.Errorf("GPT entry %d ends (LBA %d) before it starts (LBA %d)", i+1, last, first)
		}
		out = append(out, Partition{Number: i + 1, Start: first * SectorSize, Size: (last - first + 1) * SectorSize, Type: guid(typ), Name: utf16Name(e[56:128])})
	}
	if err := checkBounds(out, size); err != nil {
		return nil, err
	}
	return out, nil
}

func checkBounds(parts []Partition, size int64) error {
	for _, p := range parts {
		if p.Start+p.Size > size {
			return fmt.Errorf("partition %d (bytes %d-%d) goes past the end of the disk (%d bytes): the table is damaged", p.Number, p.Start, p.Start+p.Size, size)
		}
	}
	return nil
}

// guid formats a GUID as stored on disk (mixed endian) in its usual text.
func guid(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	var u []uint16
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
