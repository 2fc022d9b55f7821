// Package qcow2 writes new qcow2 (version 3) images whose set of clusters is
// known before any data is written.
//
// The whole layout is computed by Create, so data clusters can be written
// concurrently, in any order, with positioned writes (pwrite) at precomputed
// host offsets. The metadata (L2 tables, L1 table, refcount structures) is
// written by Close, and the header last, so an interrupted write never leaves
// a file that looks like a valid image.
//
// File layout (cluster size 64 KiB, refcount_order 4):
//
//	cluster 0          header (112 bytes), backing-format extension,
//	                   end-of-extensions, backing file name
//	L1 table           ceil(l1_size*8 / 64 KiB) clusters (none for size 0)
//	refcount table     ceil(refblocks*8 / 64 KiB) clusters
//	refcount blocks    one per 32768 host clusters (2 GiB) of the file
//	L2 tables          one per 512 MiB guest region holding a planned cluster
//	data clusters      in guest order
//
// Every allocated cluster has refcount 1, and L1/L2 entries pointing at
// allocated clusters carry QCOW_OFLAG_COPIED. Zero clusters are L2 entries with
// only the zero flag set (no host cluster): they read as zeroes even over a
// backing file. Guest clusters not planned read from the backing file (or as
// zeroes without one).
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
)

// ClusterSize is the cluster size of the images written by this package.
const ClusterSize = 65536

const (
	clusterBits     = 16
	l2Entries       = ClusterSize / 8 // entries per L2 table
	l2Coverage      = l2Entries * ClusterSize
	refcountEntries = ClusterSize / 2 // 16-bit refcounts per refcount block
	headerLength    = 112

	oflagCopied = uint64(1) << 63
	oflagZero   = uint64(1)

	extBackingFormat = 0xe2792aca
	maxBackingName   = 1023
)

// Cluster is one guest cluster the image holds.
type Cluster struct {
	Index uint64 // guest cluster index (guest offset / ClusterSize)
	Zero  bool   // zero cluster (L2 zero flag, no data) instead of a data cluster
}

// Options are optional image settings.
type Options struct {
	Backing       string // backing file name, absolute or relative to the image's folder, or ""
	BackingFormat string // backing file format, e.g. "qcow2"; only with Backing
}

// Writer writes one planned image. WriteCluster and WriteAt are safe for
// concurrent use; Close and Abort must not run concurrently with them.
type Writer struct {
	f    *os.File
	path string
	size uint64
	opts Options

	clusters []Cluster // as planned, sorted by Index
	data     []uint64  // guest indices of data clusters, sorted

	l1Size      uint64 // L1 entries
	l1Off       uint64
	l1Clusters  uint64
	rtOff       uint64
	rtClusters  uint64
	rbOff       uint64
	rbCount     uint64
	l2Off       uint64
	l2Regions   []uint64 // L1 indices that have an L2 table, sorted
	dataOff     uint64
	hostCluster uint64 // total host clusters (file length / ClusterSize)

	mu     sync.Mutex
	closed bool
	err    error // first write error, reported by Close
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// Create plans an image of size bytes (a multiple of 512) holding exactly the
// given clusters (sorted by Index, unique, all below the virtual size) and
// creates it at path, which must not exist. The file is extended to its final
// length immediately (sparse); data clusters not written read as zeroes.
func Create(path string, size uint64, clusters []Cluster, opts Options) (*Writer, error) {
	if size%512 != 0 {
		return nil, fmt.Errorf("qcow2: size %d is not a multiple of 512", size)
	}
	if size > 1<<56 {
		return nil, fmt.Errorf("qcow2: size %d too large", size)
	}
	if opts.Backing == "" && opts.BackingFormat != "" {
		return nil, errors.New("qcow2: backing format without backing file")
	}
	if len(opts.Backing) > maxBackingName {
		return nil, errors.New("qcow2: backing file name too long")
	}
	guestClusters := ceilDiv(size, ClusterSize)
	w := &Writer{path: path, size: size, opts: opts, clusters: clusters}
	for i, c := range clusters {
		if c.Index >= guestClusters {
			return nil, fmt.Errorf("qcow2: cluster %d beyond virtual size %d", c.Index, size)
		}
		if i > 0 && c.Index <= clusters[i-1].Index {
			return nil, fmt.Errorf("qcow2: clusters not sorted and unique at %d", c.Index)
		}
		if !c.Zero {
			w.data = append(w.data, c.Index)
		}
		r := c.Index / l2Entries
		if n := len(w.l2Regions); n == 0 || w.l2Regions[n-1] != r {
			w.l2Regions = append(w.l2Regions, r)
		}
	}

	w.l1Size = ceilDiv(size, l2Coverage)
	w.l1Clusters = ceilDiv(w.l1Size*8, ClusterSize) // 0 for an empty disk, as qemu does
	fixed := 1 + w.l1Clusters + uint64(len(w.l2Regions)) + uint64(len(w.data))
	// The refcount structures count themselves: iterate to a fixpoint.
	var rb, rt uint64
	for {
		total := fixed + rb + rt
		nrb := ceilDiv(total, refcountEntries)
		nrt := max(1, ceilDiv(nrb*8, ClusterSize))
		if nrb == rb && nrt == rt {
			break
		}
		rb, rt = nrb, nrt
	}
	w.rbCount, w.rtClusters = rb, rt
	w.l1Off = ClusterSize
	w.rtOff = w.l1Off + w.l1Clusters*ClusterSize
	if w.l1Clusters == 0 {
		w.l1Off = 0 // no L1 table
	}
	w.rbOff = w.rtOff + w.rtClusters*ClusterSize
	w.l2Off = w.rbOff + w.rbCount*ClusterSize
	w.dataOff = w.l2Off + uint64(len(w.l2Regions))*ClusterSize
	w.hostCluster = fixed + rb + rt

	if _, err := w.header(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	w.f = f
	if err := f.Truncate(int64(w.hostCluster * ClusterSize)); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// HostSize returns the final length of the image file in bytes.
func (w *Writer) HostSize() uint64 { return w.hostCluster * ClusterSize }

// hostOffset returns the host offset of data cluster index.
func (w *Writer) hostOffset(index uint64) (uint64, bool) {
	i, ok := slices.BinarySearch(w.data, index)
	if !ok {
		return 0, false
	}
	return w.dataOff + uint64(i)*ClusterSize, true
}

// WriteCluster writes the ClusterSize bytes of data cluster index.
func (w *Writer) WriteCluster(index uint64, data []byte) error {
	if len(data) != ClusterSize {
		return fmt.Errorf("qcow2: cluster data is %d bytes, want %d", len(data), ClusterSize)
	}
	return w.WriteAt(data, index*ClusterSize)
}

// WriteAt writes p at guest offset off. off and len(p) must be multiples of
// ClusterSize and every covered cluster must be planned as a data cluster.
// Runs of clusters that are adjacent in the guest are adjacent on the host and
// are written with a single pwrite.
func (w *Writer) WriteAt(p []byte, off uint64) error {
	if off%ClusterSize != 0 || len(p)%ClusterSize != 0 {
		return fmt.Errorf("qcow2: unaligned write at %d length %d", off, len(p))
	}
	first := off / ClusterSize
	n := uint64(len(p)) / ClusterSize
	if n == 0 {
		return nil
	}
	i, ok := slices.BinarySearch(w.data, first)
	if !ok {
		return fmt.Errorf("qcow2: cluster %d is not planned as data", first)
	}
	if uint64(i)+n > uint64(len(w.data)) || w.data[uint64(i)+n-1] != first+n-1 {
		return fmt.Errorf("qcow2: clusters %d..%d are not all planned as data", first, first+n-1)
	}
	// w.data is sorted and unique, so equal end points imply a contiguous run.
	if _, err := w.f.WriteAt(p, int64(w.dataOff+uint64(i)*ClusterSize)); err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		return err
	}
	return nil
}

// header builds cluster 0.
func (w *Writer) header() ([]byte, error) {
	h := make([]byte, ClusterSize)
	be := binary.BigEndian
	copy(h[0:4], "QFI\xfb")
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], clusterBits)
	be.PutUint64(h[24:], w.size)
	be.PutUint32(h[32:], 0) // no encryption
	be.PutUint32(h[36:], uint32(w.l1Size))
	be.PutUint64(h[40:], w.l1Off)
	be.PutUint64(h[48:], w.rtOff)
	be.PutUint32(h[56:], uint32(w.rtClusters))
	// 60: nb_snapshots 0, 64: snapshots_offset 0, 72..95: no features.
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], headerLength)
	// 104: compression_type 0 (zlib), 105..111 padding.
	p := headerLength
	if w.opts.BackingFormat != "" {
		be.PutUint32(h[p:], extBackingFormat)
		be.PutUint32(h[p+4:], uint32(len(w.opts.BackingFormat)))
		p += 8
		p += copy(h[p:], w.opts.BackingFormat)
		p = (p + 7) &^ 7
	}
	p += 8 // end of header extensions
	if w.opts.Backing != "" {
		if p+len(w.opts.Backing) > ClusterSize {
			return nil, errors.New("qcow2: header does not fit in one cluster")
		}
		be.PutUint64(h[8:], uint64(p))
		be.PutUint32(h[16:], uint32(len(w.opts.Backing)))
		copy(h[p:], w.opts.Backing)
	}
	return h, nil
}

// metadata builds the clusters from the L1 table up to the first data
// cluster: L1, refcount table, refcount blocks, L2 tables.
func (w *Writer) metadata() []byte {
	be := binary.BigEndian
	buf := make([]byte, w.dataOff-ClusterSize)
	l1 := buf[:w.l1Clusters*ClusterSize]
	rt := buf[w.rtOff-ClusterSize : w.rbOff-ClusterSize]
	rb := buf[w.rbOff-ClusterSize : w.l2Off-ClusterSize]
	l2 := buf[w.l2Off-ClusterSize:]

	for i, r := range w.l2Regions {
		be.PutUint64(l1[r*8:], (w.l2Off+uint64(i)*ClusterSize)|oflagCopied)
	}
	reg, data := 0, uint64(0)
	for _, c := range w.clusters {
		r := c.Index / l2Entries
		for w.l2Regions[reg] != r {
			reg++
		}
		e := l2[uint64(reg)*ClusterSize+(c.Index%l2Entries)*8:]
		if c.Zero {
			be.PutUint64(e, oflagZero)
		} else {
			be.PutUint64(e, (w.dataOff+data*ClusterSize)|oflagCopied)
			data++
		}
	}
	for i := range w.rbCount {
		be.PutUint64(rt[i*8:], w.rbOff+i*ClusterSize)
	}
	for i := range w.hostCluster {
		be.PutUint16(rb[i*2:], 1)
	}
	return buf
}

// Close writes the metadata, then the header, and syncs and closes the file.
// If any write failed, Close removes the file and returns the error.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errors.New("qcow2: writer already closed")
	}
	w.closed = true
	err := w.err
	w.mu.Unlock()

	if err == nil {
		_, err = w.f.WriteAt(w.metadata(), ClusterSize)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if err == nil {
		var h []byte
		if h, err = w.header(); err == nil {
			_, err = w.f.WriteAt(h, 0)
		}
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(w.path)
	}
	return err
}

// Abort closes and removes the file. It is a no-op after Close.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.f.Close()
	os.Remove(w.path)
}
