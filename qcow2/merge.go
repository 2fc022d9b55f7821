package qcow2

// Moving clusters between two adjacent layers of a chain, as stored: a
// compressed cluster's compressed bytes, a data cluster's data, a zero
// cluster as the zero flag. qemu-img commit and rebase (QEMU 7.2) write
// what they move uncompressed; this keeps a compressed backup compressed,
// and costs what the layer moved holds, not the disk.
//
// The destination is changed one 512 MiB region at a time, in steps that
// each leave it reading as before or as after the move, for every cluster
// (the callers move data only where both read the same to the point they
// keep):
//
//  1. written: the clusters moved are appended at the end of the file
//     (never over a cluster in use), with a new L2 table if the region has
//     none, and counted in the refcounts; then synced. A crash here leaves
//     clusters counted that nothing uses: leaks, which qemu-img check
//     reports as such, never as corruption.
//  2. mapped: the region's L2 table, rewritten in place with the new
//     entries (an entry is 8 bytes within one sector: a torn write leaves
//     each entry old or new), or the new table's L1 entry; then synced.
//  3. freed (Over only): the clusters no longer used are uncounted, synced,
//     and their space given back to the file system.
//
// Over, a data cluster that replaces a data cluster of Dst's own is written
// over it in step 1 instead (overwritable): the commit of a rolling chain
// then costs the overlay's bytes and a sync, and the full does not grow.
// Dst alone reads a torn cluster after a crash there, but only where the
// layer above, which the caller keeps until the move is done, holds the
// cluster.

import (
	"context"
	"encoding/binary"
	"slices"
)

// Move is one move of clusters from Src into Dst, two images of the same
// virtual size.
type Move struct {
	Src, Dst string
	// Over: every cluster Src holds goes into Dst, in place of Dst's (a
	// commit into the image below). Otherwise a cluster goes only where
	// Dst holds none and reads through its backing file (a copy up into
	// the image above).
	Over bool
	// Step, if set, is called after each step of each region ("written",
	// "mapped", "freed"); an error stops the move there, as a crash would.
	Step func(step string) error
}

// Moved is what a move did.
type Moved struct {
	Clusters   uint64 // guest clusters moved
	Compressed uint64 // of them, compressed ones
	Stored     uint64 // bytes appended to Dst for them
	Freed      uint64 // host clusters of Dst no longer used
}

// moved is one guest cluster of a region to move.
type moved struct {
	index    uint64 // in the region
	src, old uint64 // its L2 entry in Src, and in Dst before
	host     uint64 // where its bytes go in Dst
	n        uint64 // how many (a compressed span)
	inPlace  bool   // written over Dst's own cluster, whose entry stays
}

// ownData reports whether host offset off is a data cluster of im's alone,
// as its L2 entry claims: cluster-aligned, inside the file, counted once,
// and none of the metadata (header, L1 table, L2 tables, refcount table
// and blocks). A corrupt entry is then appended over, never written
// through onto what it points at.
func (im *image) ownData(off uint64) bool {
	c := off / ClusterSize
	if off%ClusterSize != 0 || c == 0 || c >= im.next {
		return false
	}
	if n, err := im.refcount(c); err != nil || n != 1 {
		return false
	}
	within := func(start, bytes uint64) bool {
		return start != 0 && off >= start&^(ClusterSize-1) && off < start+bytes
	}
	if within(im.l1Off, uint64(len(im.l1))*8) || within(im.rtOff, uint64(len(im.rt))*8) {
		return false
	}
	for _, e := range im.l1 {
		if e&hostOffsetMask == off {
			return false
		}
	}
	for _, e := range im.rt {
		if e&hostOffsetMask == off {
			return false
		}
	}
	return true
}

// overwritable reports a commit that can write a cluster's data over
// Dst's cluster of the same guest offset instead of appending it: both
// are plain data and Dst's is its own alone (the copied flag: refcount
// 1). The entry and the refcounts then stay as they are, and nothing is
// freed. What Dst reads changes at the write, as it does at the remap
// of an appended cluster; the callers commit only where the layer above
// holds the cluster, which reads the same either way.
func overwritable(se, de uint64) bool {
	return kindOf(se) == plain && kindOf(de) == plain && de&oflagCopied != 0
}

// MoveClusters carries out m. An image it does not handle is refused with
// an UnsupportedError before anything in it is written; what an earlier
// region moved stays (it reads the same).
func MoveClusters(ctx context.Context, m Move) (Moved, error) {
	var out Moved
	src, err := openImage(m.Src)
	if err != nil {
		return out, err
	}
	defer src.f.Close()
	dst, err := openImage(m.Dst)
	if err != nil {
		return out, err
	}
	defer dst.f.Close()
	if src.size != dst.size {
		return out, unsupported(m.Dst, "a virtual size of %d bytes where %s has %d", dst.size, m.Src, src.size)
	}
	mv := &mover{Move: m, src: src, dst: dst, srcL2: make([]byte, ClusterSize), dstL2: make([]byte, ClusterSize), buf: make([]byte, 0, 4<<20)}
	guestClusters := ceilDiv(src.size, ClusterSize)
	for r := range ceilDiv(guestClusters, l2Entries) {
		if err := context.Cause(ctx); err != nil {
			return out, err
		}
		if err := mv.region(r, min(l2Entries, guestClusters-r*l2Entries), &out); err != nil {
			return out, err
		}
	}
	return out, nil
}

type mover struct {
	Move
	src, dst     *image
	srcL2, dstL2 []byte
	buf          []byte // data to append at bufAt
	bufAt        uint64
	moves        []moved
}

func (mv *mover) step(s string) error {
	if mv.Step == nil {
		return nil
	}
	return mv.Step(s)
}

// region moves region r's clusters (n of them).
func (mv *mover) region(r, n uint64, out *Moved) error {
	src, dst := mv.src, mv.dst
	if src.l1[r]&hostOffsetMask == 0 {
		return nil
	}
	if _, err := src.l2(r, mv.srcL2); err != nil {
		return err
	}
	l2Off, err := dst.l2(r, mv.dstL2)
	if err != nil {
		return err
	}
	be := binary.BigEndian
	mv.moves = mv.moves[:0]
	var plains, spans uint64
	for i := range n {
		se, de := be.Uint64(mv.srcL2[i*8:]), be.Uint64(mv.dstL2[i*8:])
		if kindOf(se) == unallocated || (!mv.Over && kindOf(de) != unallocated) {
			continue
		}
		if se&(1<<9-1)&^oflagZero != 0 && kindOf(se) != packed {
			return unsupported(src.path, "reserved bits set in L2 entry %#x", se)
		}
		if mv.Over && overwritable(se, de) && dst.ownData(de&hostOffsetMask) {
			mv.moves = append(mv.moves, moved{index: i, src: se, old: de, host: de & hostOffsetMask, n: ClusterSize, inPlace: true})
			continue
		}
		switch kindOf(se) {
		case plain:
			plains++
		case packed:
			if src.compression != dst.compression {
				if err := mv.adoptCompression(); err != nil {
					return err
				}
			}
			_, sn := compressedSpan(se)
			spans += sn
		}
		mv.moves = append(mv.moves, moved{index: i, src: se, old: de})
	}
	if len(mv.moves) == 0 {
		return nil
	}
	// Lay out: the region's L2 table if it has none, the data clusters,
	// then the compressed spans packed byte after byte.
	newL2 := l2Off == 0
	if newL2 {
		c, err := dst.alloc(1, true)
		if err != nil {
			return err
		}
		l2Off = c * ClusterSize
	}
	var plainAt, packedAt uint64
	if plains > 0 {
		if plainAt, err = dst.alloc(plains, true); err != nil {
			return err
		}
	}
	if spans > 0 {
		// A span may need one sector more at its new offset: room for it.
		// The clusters are counted below, once for each span they hold.
		room := spans + uint64(len(mv.moves))*sectorSize
		if packedAt, err = dst.alloc(ceilDiv(room, ClusterSize), false); err != nil {
			return err
		}
	}
	p, tail := plainAt*ClusterSize, packedAt*ClusterSize
	remapped := 0
	for k := range mv.moves {
		m := &mv.moves[k]
		if m.inPlace {
			continue
		}
		remapped++
		var e uint64
		switch kindOf(m.src) {
		case zeroes:
			e = oflagZero
		case plain:
			m.host, m.n, p = p, ClusterSize, p+ClusterSize
			e = m.host | oflagCopied
		case packed:
			off, sn := compressedSpan(m.src)
			m.host, m.n = tail, sn
			sectors := (m.host+sn-1)/sectorSize - m.host/sectorSize
			if sectors > csizeMask { // keep its place in the sector, as it was
				m.host += (off%sectorSize - m.host%sectorSize + sectorSize) % sectorSize
				sectors = (m.host+sn-1)/sectorSize - m.host/sectorSize
			}
			tail = m.host + sn
			e = oflagCompressed | sectors<<csizeShift | m.host
			if err := hostClusters(e, func(c uint64) error { return dst.addRef(c, 1) }); err != nil {
				return err
			}
			out.Compressed++
		}
		be.PutUint64(mv.dstL2[m.index*8:], e)
	}
	if spans > 0 {
		dst.next = ceilDiv(tail, ClusterSize) // what the spans did not use stays free
	}
	// 1. written
	for _, m := range mv.moves {
		if m.n == 0 {
			continue
		}
		if err := mv.copyBytes(m); err != nil {
			return err
		}
	}
	if err := mv.flush(); err != nil {
		return err
	}
	if newL2 {
		if err := dst.pwrite(mv.dstL2, l2Off); err != nil {
			return err
		}
	}
	if err := dst.flushRefs(); err != nil {
		return err
	}
	if err := mv.extend(); err != nil {
		return err
	}
	if err := dst.f.Sync(); err != nil {
		return err
	}
	if err := mv.step("written"); err != nil {
		return err
	}
	// 2. mapped (nothing to map when every cluster was written in place)
	if remapped == 0 {
		// the region's table is Dst's already
	} else if newL2 {
		var e [8]byte
		be.PutUint64(e[:], l2Off|oflagCopied)
		err = dst.pwrite(e[:], dst.l1Off+r*8)
		dst.l1[r] = l2Off | oflagCopied
	} else {
		err = dst.pwrite(mv.dstL2, l2Off)
	}
	if err == nil && remapped > 0 {
		err = dst.f.Sync()
	}
	if err != nil {
		return err
	}
	out.Clusters += uint64(len(mv.moves))
	out.Stored += p - plainAt*ClusterSize
	if spans > 0 {
		out.Stored += tail - packedAt*ClusterSize
	}
	if err := mv.step("mapped"); err != nil {
		return err
	}
	if !mv.Over {
		return nil
	}
	// 3. freed
	var free []uint64
	for _, m := range mv.moves {
		if m.inPlace {
			continue
		}
		err := hostClusters(m.old, func(c uint64) error {
			if err := dst.addRef(c, -1); err != nil {
				return err
			}
			if n, _ := dst.refcount(c); n == 0 {
				free = append(free, c)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// Written even when no cluster is freed: a host cluster holding
	// several compressed clusters counts down without reaching 0.
	if err := dst.flushRefs(); err != nil {
		return err
	}
	if err := dst.f.Sync(); err != nil {
		return err
	}
	slices.Sort(free)
	for i := 0; i < len(free); {
		j := i + 1
		for j < len(free) && free[j] == free[j-1]+1 {
			j++
		}
		// Best effort: the clusters are free whether or not the file
		// system takes their space back.
		_ = punchHole(dst.f, int64(free[i]*ClusterSize), int64((j-i)*ClusterSize))
		i = j
	}
	out.Freed += uint64(len(free))
	return mv.step("freed")
}

// copyBytes reads m's stored bytes from the source and queues them for
// the destination, where the layout put them (in increasing order).
func (mv *mover) copyBytes(m moved) error {
	if len(mv.buf) > 0 && (mv.bufAt+uint64(len(mv.buf)) != m.host || len(mv.buf)+int(m.n) > cap(mv.buf)) {
		if err := mv.flush(); err != nil {
			return err
		}
	}
	if len(mv.buf) == 0 {
		mv.bufAt = m.host
	}
	at := len(mv.buf)
	mv.buf = mv.buf[:at+int(m.n)]
	from := m.src & hostOffsetMask
	if kindOf(m.src) == packed {
		from, _ = compressedSpan(m.src)
	}
	return mv.src.readFull(mv.buf[at:], from)
}

func (mv *mover) flush() error {
	if len(mv.buf) == 0 {
		return nil
	}
	err := mv.dst.pwrite(mv.buf, mv.bufAt)
	mv.buf = mv.buf[:0]
	return err
}

// extend makes the file reach past the last cluster laid out, so that a
// compressed span ending short of it reads whole.
func (mv *mover) extend() error {
	fi, err := mv.dst.f.Stat()
	if err != nil {
		return err
	}
	if end := int64(mv.dst.next * ClusterSize); fi.Size() < end {
		return mv.dst.f.Truncate(end)
	}
	return nil
}

// adoptCompression gives the destination the source's compression type,
// so that the source's compressed clusters read there as they are: when it
// holds no compressed cluster itself, which its L2 tables tell (a read of
// an eighth of a thousandth of its virtual size, once: the header says the
// type from then on). The header changes before any cluster comes in, and
// changes nothing of what the image reads.
func (mv *mover) adoptCompression() error {
	src, dst := mv.src, mv.dst
	refuse := unsupported(dst.path, "compressed clusters of type %d where %s's have type %d", dst.compression, src.path, src.compression)
	h := make([]byte, 112)
	if _, err := dst.f.ReadAt(h, 0); err != nil {
		return err
	}
	be := binary.BigEndian
	if be.Uint32(h[100:]) <= 104 {
		return unsupported(dst.path, "a header with no compression type field, where %s's compressed clusters have type %d", src.path, src.compression)
	}
	l2 := make([]byte, ClusterSize)
	for r := range dst.l1 {
		off, err := dst.l2(uint64(r), l2)
		if err != nil {
			return err
		}
		for i := 0; off != 0 && i < len(l2); i += 8 {
			if kindOf(be.Uint64(l2[i:])) == packed {
				return refuse
			}
		}
	}
	inc := be.Uint64(h[72:]) &^ incompatCompressionType
	if src.compression != compressionZlib {
		inc |= incompatCompressionType
	}
	be.PutUint64(h[72:], inc)
	h[104] = src.compression
	if err := dst.pwrite(h[72:80], 72); err != nil {
		return err
	}
	if err := dst.pwrite(h[104:105], 104); err != nil {
		return err
	}
	if err := dst.f.Sync(); err != nil {
		return err
	}
	dst.compression = src.compression
	return nil
}
