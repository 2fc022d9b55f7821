package qcow2

// Compressed images.
//
// A compressed cluster's size is known only once its data has been read
// and compressed, so its place cannot be handed out beforehand as Add
// does. The goroutine adding clusters calls AddData instead, which only
// walks the L2 tables (in guest order, as Add); the goroutines that read
// the data call WriteClusters, in any order, which compresses each
// cluster in the caller's goroutine and then, under a lock, gives it the
// next bytes of the compressed stream, or a whole host cluster when it
// does not shrink, and sets its L2 entry.
//
// File layout: as a plain image's, except that host clusters are handed
// out in the order the data arrives, and that refcounts are written as
// the file grows (refcount.go):
//
//	cluster 0          header, as a plain image's, with compression_type
//	L1 table
//	refcount block 0
//	then, in the order they are needed:
//	  L2 table         one cluster, when the first cluster of its region is added
//	  chunk            chunkClusters clusters of compressed data, packed byte
//	                   after byte: a compressed cluster may end in the chunk's
//	                   next cluster, and the next one starts in the same sector
//	  data cluster     a cluster that does not shrink, stored as it is
//	  refcount block   first cluster of each 2 GiB of the file after the first
//	refcount table     at the end, ceil(refblocks*8 / 64 KiB) clusters
//
// A host cluster holding parts of N compressed clusters has refcount N;
// compressed L2 entries never carry QCOW_OFLAG_COPIED. The clusters a chunk
// did not use have refcount 0 and are never written: holes of the file.
// Data that reads as zeroes becomes a zero cluster.
//
// An L2 table is written once the clusters of its region are all added,
// as in a plain image; data arriving for a region whose table is written
// already has its entry written into the table on disk (eight bytes). So
// memory holds one L2 table and one refcount block whatever the image,
// and the place of each refcount block (eight bytes per 2 GiB of file).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

const (
	oflagCompressed = uint64(1) << 62
	// Compressed cluster descriptor: bits 0..53 host offset, 54..61 the
	// sectors used past the first (x = 62 - (cluster_bits - 8)).
	csizeShift   = 62 - (clusterBits - 8)
	sectorSize   = 512
	l2OffsetMask = uint64(0x00fffffffffffe00) // the host offset bits of an L1 entry

	incompatCompressionType = uint64(1) << 3

	// minSaving is what a cluster's compression must save for it to be
	// stored compressed: a compressed length is counted in sectors, and
	// every read of a compressed cluster costs a decompression.
	minSaving = sectorSize

	// pendingEntry is the L2 entry of a cluster AddData added and whose
	// data has not been written, in memory and on disk: a reserved bit,
	// never in a finished image (Close fails while one is left).
	pendingEntry = uint64(1) << 1
)

// compressed is the state of a compressed image's writer.
type compressed struct {
	codec codec

	pending atomic.Int64 // data clusters added and not yet written

	// Under mu, with the layout (next, added, the L2 table): the
	// goroutine adding clusters shares it with those writing data.
	mu       sync.Mutex
	chunkEnd uint64   // host cluster past the chunk being filled (0: none)
	tail     uint64   // host offset where the next compressed cluster goes
	refs     []byte   // refcount block of the 2 GiB group holding next
	group    uint64   // that group
	blocks   []uint64 // host offset of each group's refcount block
}

var zeroCluster [ClusterSize]byte

// AddData adds data clusters from guest index index on to a compressed
// image, as many of count as lie in index's 512 MiB region, and returns
// how many it added. Their data is given later, by WriteClusters, in any
// order; Close fails for a cluster added but never written. Clusters must
// be added in increasing guest order, each once.
func (w *Writer) AddData(index, count uint64) (n uint64, err error) {
	if w.c == nil {
		return 0, errors.New("qcow2: AddData on an image that is not compressed: use Add")
	}
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if err := w.checkAdd(index, count); err != nil {
		return 0, err
	}
	if err := w.enter(index / l2Entries); err != nil {
		return 0, err
	}
	n = min(count, l2Entries-index%l2Entries)
	for i := range n {
		binary.BigEndian.PutUint64(w.l2[(index+i)%l2Entries*8:], pendingEntry)
	}
	w.added = index + n
	w.c.pending.Add(int64(n))
	return n, nil
}

// scratch is what a goroutine in WriteClusters writes into: compressed
// data (a compressor may go past its limit before it stops), an L2 entry.
type scratch struct {
	out []byte
	e   [8]byte
}

var scratches = newFreeList(func() *scratch { return &scratch{out: make([]byte, 0, 2*ClusterSize)} })

// freeList keeps up to freeListSize values put back, for the next get.
// Unlike a sync.Pool it drops none, so that memory stays as bounded as
// tests measure it, under the race detector too (which makes a Pool drop
// a quarter of what it is given).
type freeList[T any] struct {
	c     chan T
	fresh func() T
}

const freeListSize = 16 // more than the goroutines that compress at once

func newFreeList[T any](fresh func() T) *freeList[T] {
	return &freeList[T]{c: make(chan T, freeListSize), fresh: fresh}
}

func (l *freeList[T]) get() T {
	select {
	case v := <-l.c:
		return v
	default:
		return l.fresh()
	}
}

func (l *freeList[T]) put(v T) {
	select {
	case l.c <- v:
	default:
	}
}

// WriteClusters stores the data p of the clusters from guest index index
// on, which AddData added: whole clusters, except that the last may stop
// at the image's virtual size. Each is compressed, in the caller's
// goroutine, and stored compressed if that saves at least a sector, else
// as it is; one that reads as zeroes becomes a zero cluster. Each cluster
// must be written once.
func (w *Writer) WriteClusters(index uint64, p []byte) error {
	if w.c == nil {
		return errors.New("qcow2: WriteClusters on an image that is not compressed: use WriteAt")
	}
	end := index*ClusterSize + uint64(len(p))
	if len(p) == 0 || index >= w.guestClusters || end > w.size || (len(p)%ClusterSize != 0 && end != w.size) {
		return fmt.Errorf("qcow2: writing %d bytes at cluster %d: not whole clusters of the image", len(p), index)
	}
	sc := scratches.get()
	defer scratches.put(sc)
	for len(p) > 0 {
		data := p[:min(len(p), ClusterSize)]
		p = p[len(data):]
		if len(data) < ClusterSize { // the image's last cluster
			data = append(make([]byte, 0, ClusterSize), data...)[:ClusterSize]
		}
		if err := w.writeCluster(index, data, sc); err != nil {
			return err
		}
		index++
	}
	return nil
}

// writeCluster compresses and stores one cluster.
func (w *Writer) writeCluster(index uint64, data []byte, sc *scratch) error {
	var out []byte // none for a zero cluster
	if !bytes.Equal(data, zeroCluster[:]) {
		if out = w.c.codec.compress(sc.out[:0], data, ClusterSize-minSaving); out == nil {
			out = data
		}
	}
	host, onDisk, err := w.place(index, len(out))
	if err != nil {
		return err
	}
	if len(out) > 0 {
		if err := w.pwrite(out, host); err != nil {
			return err
		}
	}
	if onDisk {
		// The region's L2 table is written already: so is its L1 entry.
		e := sc.e[:]
		if _, err := w.f.ReadAt(e, int64(w.l1Off+index/l2Entries*8)); err != nil {
			return w.failed(err)
		}
		at := binary.BigEndian.Uint64(e)&l2OffsetMask + index%l2Entries*8
		if _, err := w.f.ReadAt(e, int64(at)); err != nil {
			return w.failed(err)
		}
		if binary.BigEndian.Uint64(e) != pendingEntry {
			return notPending(index)
		}
		binary.BigEndian.PutUint64(e, entry(host, len(out)))
		if err := w.pwrite(e, at); err != nil {
			return err
		}
	}
	w.c.pending.Add(-1)
	return nil
}

// entry is the L2 entry of a cluster whose n bytes are stored at host:
// compressed if fewer than a cluster, a zero cluster if none.
func entry(host uint64, n int) uint64 {
	switch {
	case n == 0:
		return oflagZero
	case n == ClusterSize:
		return host | oflagCopied
	}
	sectors := (host+uint64(n)-1)/sectorSize - host/sectorSize
	return oflagCompressed | sectors<<csizeShift | host
}

// place gives the n bytes stored for guest cluster index their host
// offset, and sets the cluster's L2 entry if its region's table is the
// one in memory; onDisk says the entry must go into the table on disk.
func (w *Writer) place(index uint64, n int) (host uint64, onDisk bool, err error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if index >= w.added {
		return 0, false, notPending(index)
	}
	at := index % l2Entries * 8
	inMemory := w.l2Host != 0 && w.region == index/l2Entries
	if inMemory && binary.BigEndian.Uint64(w.l2[at:]) != pendingEntry {
		return 0, false, notPending(index)
	}
	switch {
	case n == ClusterSize:
		host = w.allocCounted() * ClusterSize
	case n > 0:
		host = w.allocBytes(uint64(n))
	}
	if !inMemory {
		return host, true, nil
	}
	binary.BigEndian.PutUint64(w.l2[at:], entry(host, n))
	return host, false, nil
}

func notPending(index uint64) error {
	return fmt.Errorf("qcow2: cluster %d written twice, or not added by AddData", index)
}

// unwritten reports data clusters added but never written.
func (c *compressed) unwritten() error {
	if n := c.pending.Load(); n != 0 {
		return fmt.Errorf("qcow2: %d data clusters added were never written", n)
	}
	return nil
}
