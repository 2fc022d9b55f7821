package qcow2

import (
	"encoding/binary"
)

// writeRefcounts lays out the refcount table and blocks after the last
// cluster and writes them, a cluster at a time: every host cluster of the
// file, the refcount structures included, has refcount 1.
func (w *Writer) writeRefcounts() error {
	// The refcount structures count themselves: iterate to a fixpoint.
	var rb, rt uint64
	for {
		total := w.next + rb + rt
		nrb := ceilDiv(total, refcountEntries)
		nrt := max(1, ceilDiv(nrb*8, ClusterSize))
		if nrb == rb && nrt == rt {
			break
		}
		rb, rt = nrb, nrt
	}
	w.rtOff, w.rtClusters = w.next*ClusterSize, rt
	w.rbOff, w.rbCount = w.rtOff+rt*ClusterSize, rb
	w.hostClusters = w.next + rt + rb

	be := binary.BigEndian
	buf := make([]byte, ClusterSize)
	for c := range rt {
		clear(buf)
		for i := c * (ClusterSize / 8); i < min(rb, (c+1)*(ClusterSize/8)); i++ {
			be.PutUint64(buf[i%(ClusterSize/8)*8:], w.rbOff+i*ClusterSize)
		}
		if err := w.pwrite(buf, w.rtOff+c*ClusterSize); err != nil {
			return err
		}
	}
	for b := range rb {
		clear(buf)
		for i := range min(refcountEntries, w.hostClusters-b*refcountEntries) {
			be.PutUint16(buf[i*2:], 1)
		}
		if err := w.pwrite(buf, w.rbOff+b*ClusterSize); err != nil {
			return err
		}
	}
	return nil
}

// Refcounts of a compressed image, written as the file grows: host
// clusters are handed out in increasing order, so once the next free
// cluster has left a 2 GiB group (the clusters one refcount block
// counts), no refcount of that group changes again. Memory holds the
// block of the group being filled, and the host offset of each block for
// the refcount table, written last.

// chunkClusters is how many host clusters the compressed stream takes at
// a time. Clusters stored as they are, and L2 tables, go after the
// chunk, so that a compressed cluster can run on into the chunk's next
// cluster; what the last chunk of the image did not use goes back.
const chunkClusters = 32

// startRefcounts puts refcount block 0 after the L1 table and counts the
// clusters so far: the header, the L1 table and the block itself.
func (w *Writer) startRefcounts() {
	c := w.c
	c.refs = make([]byte, ClusterSize)
	c.blocks = []uint64{w.next * ClusterSize}
	w.next++
	for i := range w.next {
		c.inc(i)
	}
}

func (c *compressed) refcount(cluster uint64) uint16 {
	return binary.BigEndian.Uint16(c.refs[cluster%refcountEntries*2:])
}

func (c *compressed) inc(cluster uint64) {
	binary.BigEndian.PutUint16(c.refs[cluster%refcountEntries*2:], c.refcount(cluster)+1)
}

// cross starts the refcount block of the next group when the next free
// cluster is the first of that group; the group before is then complete
// (a chunk never reaches past its group) and its block is written.
func (w *Writer) cross() {
	if w.next%refcountEntries != 0 {
		return
	}
	c := w.c
	_ = w.pwrite(c.refs, c.blocks[c.group]) // an error is Close's
	clear(c.refs)
	c.group = w.next / refcountEntries
	c.blocks = append(c.blocks, w.next*ClusterSize)
	c.chunkEnd = 0 // the rest of the chunk stays free
	c.inc(w.next)
	w.next++
}

// allocCounted hands out the next host cluster, with refcount 1.
func (w *Writer) allocCounted() uint64 {
	w.cross()
	h := w.next
	w.next++
	w.c.inc(h)
	w.planned.Store(w.next * ClusterSize)
	return h
}

// allocBytes hands out the next n bytes (fewer than a cluster) of the
// compressed stream and counts each host cluster they touch.
func (w *Writer) allocBytes(n uint64) uint64 {
	c := w.c
	if c.chunkEnd != 0 && c.tail%ClusterSize != 0 && c.refcount(c.tail/ClusterSize) == 1<<16-1 {
		c.tail += ClusterSize - c.tail%ClusterSize // the refcount would overflow
	}
	if c.chunkEnd == 0 || c.tail+n > c.chunkEnd*ClusterSize {
		w.cross()
		start := w.next
		w.next += min(chunkClusters, refcountEntries-w.next%refcountEntries)
		w.planned.Store(w.next * ClusterSize)
		if start != c.chunkEnd { // else the stream runs on into it
			c.tail = start * ClusterSize
		}
		c.chunkEnd = w.next
	}
	host := c.tail
	c.tail += n
	for h := host / ClusterSize; h <= (c.tail-1)/ClusterSize; h++ {
		c.inc(h)
	}
	return host
}

// finishRefcounts lays out the refcount table after the last cluster, and
// after it the blocks of the groups it reaches into, and writes them and
// the refcount blocks not yet written.
func (w *Writer) finishRefcounts() error {
	c := w.c
	if c.chunkEnd != 0 && c.chunkEnd == w.next {
		w.next = ceilDiv(c.tail, ClusterSize) // give back what the last chunk did not use
	}
	// The table and those blocks count themselves: iterate to a fixpoint.
	have := uint64(len(c.blocks))
	var rt, extra, groups uint64
	for {
		groups = ceilDiv(w.next+rt+extra, refcountEntries)
		nrt, nextra := max(1, ceilDiv(groups*8, ClusterSize)), groups-have
		if nrt == rt && nextra == extra {
			break
		}
		rt, extra = nrt, nextra
	}
	w.rtOff, w.rtClusters = w.next*ClusterSize, rt
	w.rbOff, w.rbCount = c.blocks[0], groups
	w.hostClusters = w.next + rt + extra
	for i := range extra {
		c.blocks = append(c.blocks, (w.next+rt+i)*ClusterSize)
	}
	for g := c.group; g < groups; g++ {
		if g != c.group {
			clear(c.refs)
		}
		for h := max(w.next, g*refcountEntries); h < min(w.hostClusters, (g+1)*refcountEntries); h++ {
			c.inc(h)
		}
		if err := w.pwrite(c.refs, c.blocks[g]); err != nil {
			return err
		}
	}
	buf := c.refs // written: reuse it for the table
	for t := range rt {
		clear(buf)
		for i := t * (ClusterSize / 8); i < min(groups, (t+1)*(ClusterSize/8)); i++ {
			binary.BigEndian.PutUint64(buf[i%(ClusterSize/8)*8:], c.blocks[i])
		}
		if err := w.pwrite(buf, w.rtOff+t*ClusterSize); err != nil {
			return err
		}
	}
	return nil
}
