package qcow2

// An existing image opened for moving clusters between two layers of a
// chain (merge.go): its header, L1 table and refcount table in memory,
// its L2 tables and refcount blocks read as they are needed.
//
// Only what this package and QEMU's default qcow2 images use is handled:
// version 3, 64 KiB clusters, 16-bit refcounts, no encryption, no internal
// snapshots, no extended L2 entries (subclusters), no external data file,
// and no feature a writer that does not know it must keep up (dirty or
// corrupt images, autoclear features such as persistent bitmaps). Any
// other image is refused with an UnsupportedError, before anything is
// written.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// UnsupportedError is an image the cluster mover does not handle, and why.
type UnsupportedError struct {
	Path, Why string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s: %s, which vbackup's cluster mover does not handle", e.Path, e.Why)
}

const (
	hostOffsetMask = uint64(0x00fffffffffffe00) // host offset bits of an L1 or plain L2 entry
	csizeMask      = uint64(1)<<(62-csizeShift) - 1
	coffsetMask    = uint64(1)<<csizeShift - 1
	l1EntryMax     = 1 << 25 // QEMU's own limit on the L1 table (32 MiB)
)

type image struct {
	f           *os.File
	path        string
	size        uint64 // virtual size
	compression byte   // the header's compression_type
	l1Off       uint64
	l1          []uint64
	rtOff       uint64
	rt          []uint64          // the refcount table: host offset of each refcount block
	next        uint64            // first host cluster past the end of the file
	blocks      map[uint64][]byte // refcount blocks read, by index
	dirty       map[uint64]bool   // refcount blocks changed and not written
	newBlocks   []uint64          // refcount blocks added, whose table entries are not written
}

func unsupported(path, format string, args ...any) error {
	return &UnsupportedError{Path: path, Why: fmt.Sprintf(format, args...)}
}

// openImage opens the image at path for reading and writing.
func openImage(path string) (*image, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	im, err := readImage(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return im, nil
}

func readImage(f *os.File, path string) (*image, error) {
	h := make([]byte, 112)
	if _, err := f.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("%s: reading the qcow2 header: %w", path, err)
	}
	be := binary.BigEndian
	if string(h[:4]) != "QFI\xfb" {
		return nil, fmt.Errorf("%s: not a qcow2 image", path)
	}
	if v := be.Uint32(h[4:]); v != 3 {
		return nil, unsupported(path, "qcow2 version %d (compat=0.10)", v)
	}
	if cb := be.Uint32(h[20:]); cb != clusterBits {
		return nil, unsupported(path, "cluster size %d", uint64(1)<<cb)
	}
	if c := be.Uint32(h[32:]); c != 0 {
		return nil, unsupported(path, "encryption")
	}
	if n := be.Uint32(h[60:]); n != 0 {
		return nil, unsupported(path, "%d internal snapshots", n)
	}
	if inc := be.Uint64(h[72:]); inc&^incompatCompressionType != 0 {
		return nil, unsupported(path, "incompatible features %#x (dirty, corrupt, external data file or subclusters)", inc)
	}
	if ac := be.Uint64(h[88:]); ac != 0 {
		return nil, unsupported(path, "autoclear features %#x (such as persistent bitmaps)", ac)
	}
	if ro := be.Uint32(h[96:]); ro != 4 {
		return nil, unsupported(path, "%d-bit refcounts", 1<<ro)
	}
	im := &image{f: f, path: path, size: be.Uint64(h[24:]), l1Off: be.Uint64(h[40:]), rtOff: be.Uint64(h[48:]),
		blocks: map[uint64][]byte{}, dirty: map[uint64]bool{}}
	if be.Uint64(h[72:])&incompatCompressionType != 0 && be.Uint32(h[100:]) > 104 {
		im.compression = h[104]
	}
	l1Size := uint64(be.Uint32(h[36:]))
	if l1Size < ceilDiv(ceilDiv(im.size, ClusterSize), l2Entries) || l1Size > l1EntryMax {
		return nil, fmt.Errorf("%s: L1 table of %d entries for a virtual size of %d bytes", path, l1Size, im.size)
	}
	var err error
	if im.l1, err = im.readTable(im.l1Off, l1Size); err != nil {
		return nil, err
	}
	rtClusters := uint64(be.Uint32(h[56:]))
	if rtClusters == 0 || rtClusters > 1<<20 {
		return nil, fmt.Errorf("%s: refcount table of %d clusters", path, rtClusters)
	}
	if im.rt, err = im.readTable(im.rtOff, rtClusters*ClusterSize/8); err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	im.next = ceilDiv(uint64(fi.Size()), ClusterSize)
	return im, nil
}

// readTable reads n big-endian 64-bit entries at off.
func (im *image) readTable(off, n uint64) ([]uint64, error) {
	buf := make([]byte, n*8)
	if _, err := im.f.ReadAt(buf, int64(off)); err != nil {
		return nil, fmt.Errorf("%s: reading a table at %d: %w", im.path, off, err)
	}
	t := make([]uint64, n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	return t, nil
}

// l2 reads the L2 table of region r into buf and returns its host offset,
// 0 (and buf cleared) when the region has none.
func (im *image) l2(r uint64, buf []byte) (uint64, error) {
	off := im.l1[r] & hostOffsetMask
	if off == 0 {
		clear(buf)
		return 0, nil
	}
	if _, err := im.f.ReadAt(buf, int64(off)); err != nil {
		return 0, fmt.Errorf("%s: reading the L2 table at %d: %w", im.path, off, err)
	}
	return off, nil
}

// refBlock is the refcount block counting host cluster c, read once; nil
// when the refcount table has no block there (every refcount 0).
func (im *image) refBlock(c uint64) ([]byte, error) {
	i := c / refcountEntries
	if b, ok := im.blocks[i]; ok {
		return b, nil
	}
	if i >= uint64(len(im.rt)) {
		return nil, unsupported(im.path, "a refcount table too small for the clusters added (it would have to grow)")
	}
	off := im.rt[i] & hostOffsetMask
	if off == 0 {
		return nil, nil
	}
	b := make([]byte, ClusterSize)
	if _, err := im.f.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("%s: reading a refcount block at %d: %w", im.path, off, err)
	}
	im.blocks[i] = b
	return b, nil
}

func (im *image) refcount(c uint64) (uint16, error) {
	b, err := im.refBlock(c)
	if b == nil || err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(b[c%refcountEntries*2:]), nil
}

// addRef adds delta to host cluster c's refcount, in memory.
func (im *image) addRef(c uint64, delta int) error {
	b, err := im.refBlock(c)
	if err != nil {
		return err
	}
	if b == nil {
		return fmt.Errorf("%s: host cluster %d has no refcount block", im.path, c)
	}
	at := c % refcountEntries * 2
	n := int(binary.BigEndian.Uint16(b[at:])) + delta
	if n < 0 || n > 1<<16-1 {
		return fmt.Errorf("%s: refcount of host cluster %d would be %d", im.path, c, n)
	}
	binary.BigEndian.PutUint16(b[at:], uint16(n))
	im.dirty[c/refcountEntries] = true
	return nil
}

// alloc hands out count adjacent host clusters at the end of the file,
// counted once each if counted. Clusters counted already past the end of
// the file (what a crash left between a refcount update and the data) are
// skipped, never reused. A refcount block missing for them is added, just
// before them, and counts itself.
func (im *image) alloc(count uint64, counted bool) (uint64, error) {
	for {
		first := im.next
		if first/refcountEntries != (first+count-1)/refcountEntries {
			// Never across two refcount blocks: start in the next one.
			first = (first/refcountEntries + 1) * refcountEntries
		}
		b, err := im.refBlock(first)
		if err != nil {
			return 0, err
		}
		if b == nil {
			if err := im.addRefBlock(first); err != nil {
				return 0, err
			}
			continue // the block took the first cluster
		}
		busy := false
		for c := first; c < first+count; c++ {
			if n, _ := im.refcount(c); n != 0 {
				im.next, busy = c+1, true
			}
		}
		if busy {
			continue
		}
		for c := first; c < first+count && counted; c++ {
			if err := im.addRef(c, 1); err != nil {
				return 0, err
			}
		}
		im.next = first + count
		return first, nil
	}
}

// addRefBlock puts a new refcount block, counting itself, at host cluster
// c, the first free one of the group it is to count. Its refcount table
// entry is written in place by flushRefs, after the block itself.
func (im *image) addRefBlock(c uint64) error {
	i := c / refcountEntries
	if c != im.next && c != i*refcountEntries {
		return fmt.Errorf("%s: refcount block placed at cluster %d", im.path, c)
	}
	b := make([]byte, ClusterSize)
	binary.BigEndian.PutUint16(b[c%refcountEntries*2:], 1)
	im.blocks[i] = b
	im.dirty[i] = true
	im.rt[i] = c * ClusterSize
	im.newBlocks = append(im.newBlocks, i)
	im.next = c + 1
	return nil
}

// flushRefs writes the refcount blocks changed, then the refcount table
// entries of those added.
func (im *image) flushRefs() error {
	for i := range im.dirty {
		if err := im.pwrite(im.blocks[i], im.rt[i]&hostOffsetMask); err != nil {
			return err
		}
	}
	clear(im.dirty)
	if len(im.newBlocks) > 0 {
		if err := im.f.Sync(); err != nil { // the blocks before the table points at them
			return err
		}
	}
	var e [8]byte
	for _, i := range im.newBlocks {
		binary.BigEndian.PutUint64(e[:], im.rt[i])
		if err := im.pwrite(e[:], im.rtOff+i*8); err != nil {
			return err
		}
	}
	im.newBlocks = im.newBlocks[:0]
	return nil
}

func (im *image) pwrite(p []byte, off uint64) error {
	if _, err := im.f.WriteAt(p, int64(off)); err != nil {
		return fmt.Errorf("%s: writing %d bytes at %d: %w", im.path, len(p), off, err)
	}
	return nil
}

// readFull reads len(p) bytes at off; what lies past the end of the file
// reads as zeroes (QEMU may leave an image's last cluster short).
func (im *image) readFull(p []byte, off uint64) error {
	n, err := im.f.ReadAt(p, int64(off))
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		err = nil
	}
	if err != nil {
		return fmt.Errorf("%s: reading %d bytes at %d: %w", im.path, len(p), off, err)
	}
	return nil
}

// entryKind classifies an L2 entry.
type entryKind int

const (
	unallocated entryKind = iota // reads from the backing file
	zeroes                       // the zero flag (with or without a preallocated cluster)
	plain                        // a data cluster stored as it is
	packed                       // a compressed cluster
)

func kindOf(e uint64) entryKind {
	switch {
	case e&oflagCompressed != 0:
		return packed
	case e&oflagZero != 0:
		return zeroes
	case e&hostOffsetMask != 0:
		return plain
	}
	return unallocated
}

// compressedSpan is where a compressed cluster's bytes lie: from its
// offset to the end of its last sector.
func compressedSpan(e uint64) (off, n uint64) {
	off = e & coffsetMask
	sectors := (e>>csizeShift)&csizeMask + 1
	return off, sectors*sectorSize - off%sectorSize
}

// hostClusters calls fn for each host cluster an entry's data touches.
func hostClusters(e uint64, fn func(c uint64) error) error {
	switch kindOf(e) {
	case packed:
		off, n := compressedSpan(e)
		for c := off / ClusterSize; c <= (off+n-1)/ClusterSize; c++ {
			if err := fn(c); err != nil {
				return err
			}
		}
	case plain, zeroes:
		if h := e & hostOffsetMask; h != 0 {
			return fn(h / ClusterSize)
		}
	}
	return nil
}
