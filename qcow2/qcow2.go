// Package qcow2 writes new qcow2 (version 3) images whose clusters are
// added in guest order before their data is written, in memory that does
// not grow with the image: one L2 table at a time.
//
// Add and AddZero lay out each cluster as it is added and return where a
// data cluster's bytes go, so data can be written concurrently, in any
// order, with positioned writes (pwrite) at those host offsets, while
// later clusters are still being added. Each L2 table is written once the
// clusters of its region are all added; the refcount structures are
// written by Close, and the header last, after a sync, so an interrupted
// write never leaves a file that looks like a valid image.
//
// File layout (cluster size 64 KiB, refcount_order 4):
//
//	cluster 0          header (112 bytes), backing-format extension,
//	                   end-of-extensions, backing file name
//	L1 table           ceil(l1_size*8 / 64 KiB) clusters (none for size 0)
//	then for each 512 MiB guest region holding an added cluster, in guest order:
//	  L2 table         one cluster
//	  data clusters    the region's, in guest order
//	refcount table     ceil(refblocks*8 / 64 KiB) clusters
//	refcount blocks    one per 32768 host clusters (2 GiB) of the file
//
// Every allocated cluster has refcount 1, and L1/L2 entries pointing at
// allocated clusters carry QCOW_OFLAG_COPIED. Zero clusters are L2 entries with
// only the zero flag set (no host cluster): they read as zeroes even over a
// backing file. Guest clusters not added read from the backing file (or as
// zeroes without one).
//
// A compressed image (Options.Compression) is laid out differently: see
// compress.go.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// ClusterSize is the cluster size of the images written by this package.
const ClusterSize = 65536

const (
	clusterBits     = 16
	l2Entries       = ClusterSize / 8 // entries per L2 table
	refcountEntries = ClusterSize / 2 // 16-bit refcounts per refcount block
	headerLength    = 112

	oflagCopied = uint64(1) << 63
	oflagZero   = uint64(1)

	extBackingFormat = 0xe2792aca
	maxBackingName   = 1023
)

// Options are optional image settings.
type Options struct {
	Backing       string // backing file name, absolute or relative to the image's folder, or ""
	BackingFormat string // backing file format, e.g. "qcow2"; only with Backing
	// Compression is "" for an image whose data clusters are stored as
	// they are (Add, WriteAt), or "zlib" or "zstd" for one whose data
	// clusters are compressed where that makes them smaller (AddData,
	// WriteClusters). QEMU reads zstd from version 5.1 on.
	Compression string
}

// Writer writes one image. Add, AddData and AddZero must be called from
// one goroutine at a time; WriteAt and WriteClusters are safe for
// concurrent use, with them too. Close and Abort must not run concurrently
// with any of them.
type Writer struct {
	f    *os.File
	path string
	size uint64
	opts Options

	guestClusters uint64
	l1Size        uint64 // L1 entries
	l1Off         uint64
	dataStart     uint64 // host offset of the first cluster after the L1 table

	// Layout state, owned by the goroutine that adds clusters.
	next   uint64 // next free host cluster
	added  uint64 // guest index just past the last cluster added
	region uint64 // L1 index of the L2 table being filled, when l2Host != 0
	l2Host uint64
	l2     []byte
	l1e    [8]byte // the L1 entry of the L2 table written last

	planned atomic.Uint64 // host offset just past the last cluster laid out

	// Set by Close.
	rtOff, rtClusters, rbOff, rbCount, hostClusters uint64

	c *compressed // nil for a plain image

	mu     sync.Mutex
	closed bool
	err    error // first write error, reported by Close
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

// Create starts an image of size bytes (a multiple of 512) at path, which
// must not exist. It holds no cluster until Add or AddZero adds some.
func Create(path string, size uint64, opts Options) (*Writer, error) {
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
	w := &Writer{path: path, size: size, opts: opts}
	if opts.Compression != "" {
		cd, err := newCodec(opts.Compression)
		if err != nil {
			return nil, err
		}
		w.c = &compressed{codec: cd}
	}
	w.guestClusters = ceilDiv(size, ClusterSize)
	w.l1Size = ceilDiv(w.guestClusters, l2Entries)
	l1Clusters := ceilDiv(w.l1Size*8, ClusterSize) // 0 for an empty disk, as qemu does
	if l1Clusters > 0 {
		w.l1Off = ClusterSize
	}
	w.next = 1 + l1Clusters
	w.dataStart = w.next * ClusterSize
	if w.c != nil {
		w.startRefcounts()
	}
	w.planned.Store(w.next * ClusterSize)
	if _, err := w.header(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	w.f = f
	return w, nil
}

// checkAdd validates that count clusters from index come after those added.
func (w *Writer) checkAdd(index, count uint64) error {
	switch {
	case count == 0:
		return errors.New("qcow2: adding no cluster")
	case index < w.added:
		return fmt.Errorf("qcow2: cluster %d added out of order (after %d)", index, w.added-1)
	case index >= w.guestClusters || count > w.guestClusters-index:
		return fmt.Errorf("qcow2: clusters %d..%d beyond virtual size %d", index, index+count-1, w.size)
	}
	return nil
}

// Add adds data clusters from guest index index on: as many of count as
// lie in index's 512 MiB region, which are adjacent on the host too. It
// returns how many it added, n, and the host offset of the first: the
// data of guest cluster index+i goes at host+i*ClusterSize. Clusters must
// be added in increasing guest order, each once.
func (w *Writer) Add(index, count uint64) (host, n uint64, err error) {
	if w.c != nil {
		return 0, 0, errors.New("qcow2: Add on a compressed image: use AddData")
	}
	if err := w.checkAdd(index, count); err != nil {
		return 0, 0, err
	}
	if err := w.enter(index / l2Entries); err != nil {
		return 0, 0, err
	}
	n = min(count, l2Entries-index%l2Entries)
	host = w.next * ClusterSize
	for i := range n {
		binary.BigEndian.PutUint64(w.l2[(index+i)%l2Entries*8:], (host+i*ClusterSize)|oflagCopied)
	}
	w.next += n
	w.added = index + n
	w.planned.Store(w.next * ClusterSize)
	return host, n, nil
}

// AddZero adds count zero clusters from guest index index on, in
// increasing guest order like Add.
func (w *Writer) AddZero(index, count uint64) error {
	if w.c != nil {
		w.c.mu.Lock() // the writers of data share the L2 table
		defer w.c.mu.Unlock()
	}
	if err := w.checkAdd(index, count); err != nil {
		return err
	}
	for end := index + count; index < end; {
		if err := w.enter(index / l2Entries); err != nil {
			return err
		}
		n := min(end-index, l2Entries-index%l2Entries)
		for i := range n {
			binary.BigEndian.PutUint64(w.l2[(index+i)%l2Entries*8:], oflagZero)
		}
		index += n
		w.added = index
	}
	return nil
}

// enter makes region r's L2 table the one being filled, writing out the
// previous one; a region's table is laid out before its data clusters.
func (w *Writer) enter(r uint64) error {
	if w.l2Host != 0 && w.region == r {
		return nil
	}
	if err := w.flushL2(); err != nil {
		return err
	}
	if w.l2 == nil {
		w.l2 = make([]byte, ClusterSize)
	}
	clear(w.l2)
	w.region = r
	if w.c != nil {
		w.l2Host = w.allocCounted() * ClusterSize
		return nil
	}
	w.l2Host = w.next * ClusterSize
	w.next++
	return nil
}

// flushL2 writes the L2 table being filled and its L1 entry.
func (w *Writer) flushL2() error {
	if w.l2Host == 0 {
		return nil
	}
	binary.BigEndian.PutUint64(w.l1e[:], w.l2Host|oflagCopied)
	err := w.pwrite(w.l2, w.l2Host)
	if err == nil {
		err = w.pwrite(w.l1e[:], w.l1Off+w.region*8)
	}
	w.l2Host = 0
	return err
}

// WriteAt writes p at host offset off, within the data clusters Add has
// laid out (at the offsets it returned). Writing a data cluster's bytes is
// optional: what is not written reads as zeroes.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if w.c != nil {
		return 0, errors.New("qcow2: WriteAt on a compressed image: use WriteClusters")
	}
	if off < int64(w.dataStart) || uint64(off)+uint64(len(p)) > w.planned.Load() {
		return 0, fmt.Errorf("qcow2: write of %d bytes at host offset %d is outside the data clusters laid out", len(p), off)
	}
	if err := w.pwrite(p, uint64(off)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pwrite writes p at off, remembering the first error for Close.
func (w *Writer) pwrite(p []byte, off uint64) error {
	if _, err := w.f.WriteAt(p, int64(off)); err != nil {
		return w.failed(err)
	}
	return nil
}

// failed remembers err, if it is the first, for Close and returns it.
func (w *Writer) failed(err error) error {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	return err
}

// Allocated is the length of the file laid out so far: past the last
// cluster handed out.
func (w *Writer) Allocated() uint64 { return w.planned.Load() }

// Fd is the image file's descriptor, for hints to the kernel such as
// starting the write-back of what was written.
func (w *Writer) Fd() uintptr { return w.f.Fd() }

// HostSize returns the length of the image file, once Close has returned.
func (w *Writer) HostSize() uint64 { return w.hostClusters * ClusterSize }

// Close writes the last L2 table, the refcount structures, then the
// header, and syncs and closes the file. If any write failed, Close
// removes the file and returns the error.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errors.New("qcow2: writer already closed")
	}
	w.closed = true
	err := w.err
	w.mu.Unlock()

	if err == nil && w.c != nil {
		err = w.c.unwritten()
	}
	if err == nil {
		err = w.flushL2()
	}
	switch {
	case err != nil:
	case w.c != nil:
		err = w.finishRefcounts()
	default:
		err = w.writeRefcounts()
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
	// 60: nb_snapshots 0, 64: snapshots_offset 0, 80..95: no features.
	if w.c != nil && w.c.codec.kind() != 0 {
		be.PutUint64(h[72:], incompatCompressionType)
		h[104] = w.c.codec.kind()
	} // else 104: compression_type 0 (zlib); 105..111: padding
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], headerLength)
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
