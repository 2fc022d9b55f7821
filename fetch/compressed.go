package fetch

import (
	"cmp"
	"fmt"
	"iter"
	"runtime"
	"sync/atomic"

	"vbackup/nbd"
	"vbackup/qcow2"
)

// compressedTarget is a new qcow2 image whose clusters are compressed
// (qcow2.Options.Compression). Their places are known only once their
// data is compressed: the layout adds the clusters in guest order
// (AddData) and the copy hands each read to the image at its guest
// offset (WriteClusters), which compresses it in the copy's goroutine.
type compressedTarget struct {
	*qcow2.Writer
	size    uint64
	gate    writeGate
	wb      *writeBehind
	evicted atomic.Uint64 // the file's length handed to the write-behind
}

// compressors is how many writes into a compressed image run at once:
// each compresses what it writes, which takes a CPU, so as many as there
// are CPUs (the inode lock that limits writers matters less: the writes
// are smaller and fewer).
var compressors = max(writers, runtime.GOMAXPROCS(0))

// evictStep is how much the file grows between hand-overs to the
// write-behind: the data goes to host offsets the copy does not see, so
// the file is handed over as it grows. evictAfter steps (256 MiB) stay in
// the page cache, more than the copy has in flight, so that the L2
// entries of late reads, written into tables already on disk, find
// their page there.
const evictStep = 8 << 20

func newCompressedTarget(path, backing, compress string, size uint64, evict bool) (target, error) {
	w, err := createQcow2(path, backing, compress, size)
	if err != nil {
		return nil, err
	}
	return &compressedTarget{Writer: w, size: size, gate: newWriteGate(compressors), wb: newWriteBehind(w.Fd(), evict)}, nil
}

func (t *compressedTarget) fit(p plan) plan { return clusterAligned(p, t.size) }

// tune has each read written whole, its holes as zeroes, and its length
// a whole number of clusters: each write is then whole clusters, as
// compression takes them.
func (t *compressedTarget) tune(o *nbd.CopyOptions) {
	o.DstNotZero = true
	o.RequestSize = (cmp.Or(o.RequestSize, 256<<10) + clusterSize - 1) / clusterSize * clusterSize
}

// layout adds each data piece's clusters to the image, as much as lies in
// one 512 MiB region at a time (so that the layout stays close to the
// copy), and yields it to be copied at its guest offset.
func (t *compressedTarget) layout(p plan) iter.Seq2[nbd.Piece, error] {
	return layoutClusters(p, t.AddZero, func(first, count uint64) (uint64, uint64, error) {
		n, err := t.AddData(first, count)
		return first * clusterSize, n, err // copied to its guest offset: WriteAt places it
	})
}

// WriteAt compresses and writes the clusters p holds from guest offset
// off on, and hands what the file has grown by to the write-behind.
func (t *compressedTarget) WriteAt(p []byte, off int64) (int, error) {
	if off%clusterSize != 0 {
		return 0, fmt.Errorf("a compressed image is written in whole clusters: %d bytes at offset %d", len(p), off)
	}
	t.gate.enter()
	err := t.WriteClusters(uint64(off)/clusterSize, p)
	t.gate.leave()
	if err != nil {
		return 0, err
	}
	for {
		done, end := t.evicted.Load(), t.Allocated()
		if end < done+evictStep {
			return len(p), nil
		}
		if t.evicted.CompareAndSwap(done, done+evictStep) {
			return len(p), t.wb.written(int64(done), evictStep)
		}
	}
}

func (t *compressedTarget) finish() error {
	if err := t.wb.failed(); err != nil {
		t.Abort()
		return err
	}
	return t.Close()
}

func (t *compressedTarget) abort() { t.Abort() }

func (t *compressedTarget) placements() ([]Placement, bool) { return nil, false }
