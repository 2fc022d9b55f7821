package fetch

import (
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"

	"vbackup/nbd"
	"vbackup/qcow2"
)

// target is the file being written. The copy writes into it (WriteAt) the
// data pieces layout yields, where each says.
type target interface {
	io.WriterAt
	// fit shapes a plan to what the file can hold.
	fit(p plan) plan
	// tune adjusts the copy to what the file's writes need.
	tune(o *nbd.CopyOptions)
	// layout places the pieces of a fitted plan in the file, in order, as
	// the copy consumes them, and yields the data to copy and where it
	// goes. Zero pieces need no copy: the file is new.
	layout(p plan) iter.Seq2[nbd.Piece, error]
	finish() error // flush to stable storage and close
	abort()
	// placements says where layout put the data, in order, if it was
	// asked to record it (Disk.Sum) and could: nil where the file is the
	// disk itself (raw).
	placements() (runs []Placement, ok bool)
}

// createTarget makes the file at path that a fetch of d writes. With
// evict, its writes leave the page cache as the copy goes (writeBehind).
func createTarget(path string, d Disk, size uint64, evict bool) (target, error) {
	switch d.Format {
	case "raw":
		if d.Backing != "" {
			return nil, fmt.Errorf("a raw file cannot have a backing file; use --format qcow2")
		}
		if d.Compress != "" {
			return nil, fmt.Errorf("a raw file cannot be compressed; use --format qcow2")
		}
		return newRawTarget(path, size, evict)
	case "qcow2":
		if d.Compress != "" && d.Sum {
			return nil, fmt.Errorf("a compressed image is not summed as it is written: read it back")
		}
		if d.Compress != "" {
			return newCompressedTarget(path, d.Backing, d.Compress, size, evict)
		}
		return newQcow2Target(path, d.Backing, size, evict, d.Sum)
	}
	return nil, fmt.Errorf("unknown format %q: use raw or qcow2", d.Format)
}

// rawTarget is a sparse raw file: what is not written reads as zeroes. It
// gets its full length only when complete (measured a little faster than
// a file of that length from the start, and a cut-short file is not
// mistaken for a whole disk).
type rawTarget struct {
	*os.File
	size uint64
	gate writeGate
	wb   *writeBehind
}

func newRawTarget(path string, size uint64, evict bool) (target, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &rawTarget{File: f, size: size, gate: newWriteGate(writers), wb: newWriteBehind(f.Fd(), evict)}, nil
}

func (t *rawTarget) fit(p plan) plan { return p }

func (t *rawTarget) tune(*nbd.CopyOptions) {}

// layout puts every piece at its own offset.
func (t *rawTarget) layout(p plan) iter.Seq2[nbd.Piece, error] {
	return func(yield func(nbd.Piece, error) bool) {
		for x, err := range p {
			if err != nil {
				yield(nbd.Piece{}, err)
				return
			}
			if !x.zero && !yield(nbd.Piece{Offset: x.off, Length: x.len, To: x.off}, nil) {
				return
			}
		}
	}
}

func (t *rawTarget) finish() error {
	if err := t.wb.failed(); err != nil {
		t.Close()
		return err
	}
	if err := t.Truncate(int64(t.size)); err != nil {
		t.Close()
		return err
	}
	if err := t.Sync(); err != nil {
		t.Close()
		return err
	}
	return t.Close()
}

func (t *rawTarget) abort() { t.Close() }

func (t *rawTarget) placements() ([]Placement, bool) { return nil, true }

// qcow2Target is a new qcow2 image laid out as the copy goes
// (qcow2.Writer): each data cluster's place is known before it is read,
// so data lands at those offsets, concurrently, as in a raw file. Going
// through qemu-nbd instead measured 2.5x slower than qemu-img convert.
type qcow2Target struct {
	*qcow2.Writer
	size uint64
	gate writeGate
	wb   *writeBehind
	// With record, where layout put the data, runs merged, up to
	// maxPlacements of them; lost past that (a very fragmented disk), so
	// that memory does not grow with the disk.
	record, lost bool
	laid         []Placement
}

// maxPlacements bounds the layout a summed qcow2 keeps: 6 MiB of it, a
// run of data per 4 MiB of a 1 TiB disk.
const maxPlacements = 1 << 18

func newQcow2Target(path, backing string, size uint64, evict, record bool) (target, error) {
	w, err := createQcow2(path, backing, "", size)
	if err != nil {
		return nil, err
	}
	return &qcow2Target{Writer: w, size: size, gate: newWriteGate(writers), wb: newWriteBehind(w.Fd(), evict), record: record}, nil
}

// createQcow2 starts an image over backing, if any, with compression
// compress, if any.
func createQcow2(path, backing, compress string, size uint64) (*qcow2.Writer, error) {
	opts := qcow2.Options{Compression: compress}
	if backing != "" {
		// QEMU reads a relative backing name from the image's folder.
		resolved := backing
		if !filepath.IsAbs(backing) {
			resolved = filepath.Join(filepath.Dir(path), backing)
		}
		if _, err := os.Stat(resolved); err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		opts.Backing, opts.BackingFormat = backing, "qcow2"
	}
	return qcow2.Create(path, size, opts)
}

func (t *qcow2Target) fit(p plan) plan { return clusterAligned(p, t.size) }

func (t *qcow2Target) tune(*nbd.CopyOptions) {}

// layout adds each piece's clusters to the image; a data piece's clusters
// are adjacent on the host within a 512 MiB region, so it is copied in
// one piece per region it spans.
func (t *qcow2Target) layout(p plan) iter.Seq2[nbd.Piece, error] {
	return func(yield func(nbd.Piece, error) bool) {
		for x, err := range layoutClusters(p, t.AddZero, t.Add) {
			if err == nil && t.record && !t.lost {
				t.laid = addPlacement(t.laid, Placement{Off: x.Offset, Len: x.Length, To: x.To})
				if len(t.laid) > maxPlacements {
					t.laid, t.lost = nil, true
				}
			}
			if !yield(x, err) {
				return
			}
		}
	}
}

func (t *qcow2Target) placements() ([]Placement, bool) { return t.laid, !t.lost }

// addPlacement appends p to runs laid in order, extending the last run
// when p continues it on both sides.
func addPlacement(runs []Placement, p Placement) []Placement {
	if n := len(runs); n > 0 && runs[n-1].Off+runs[n-1].Len == p.Off && runs[n-1].To+runs[n-1].Len == p.To {
		runs[n-1].Len += p.Len
		return runs
	}
	return append(runs, p)
}

// layoutClusters adds a plan's pieces to a qcow2 image cluster by cluster:
// zero pieces with addZero, data pieces with add, which takes as many of
// the clusters as fit one region and says where they go (To), and yields
// each data piece's part to be copied.
func layoutClusters(p plan, addZero func(first, count uint64) error, add func(first, count uint64) (to, n uint64, err error)) iter.Seq2[nbd.Piece, error] {
	return func(yield func(nbd.Piece, error) bool) {
		for x, err := range p {
			if err != nil {
				yield(nbd.Piece{}, err)
				return
			}
			first, count := x.off/clusterSize, (x.len+clusterSize-1)/clusterSize
			if x.zero {
				if err := addZero(first, count); err != nil {
					yield(nbd.Piece{}, err)
					return
				}
				continue
			}
			for count > 0 {
				to, n, err := add(first, count)
				if err != nil {
					yield(nbd.Piece{}, err)
					return
				}
				off := first * clusterSize
				if !yield(nbd.Piece{Offset: off, Length: min(n*clusterSize, x.end()-off), To: to}, nil) {
					return
				}
				first, count = first+n, count-n
			}
		}
	}
}

func (t *qcow2Target) finish() error {
	if err := t.wb.failed(); err != nil {
		t.Abort()
		return err
	}
	return t.Close()
}

func (t *qcow2Target) abort() { t.Abort() }

// writers is how many writes into one file run at once. The copy has
// many requests in flight, but a buffered write takes the file's inode
// lock: with all of them writing, the kernel spun on that lock
// (rwsem_spin_on_owner, 4 % of a fetch's CPU samples, on 2 CPUs shared
// with QEMU) and a 2 GiB fetch was about 10 % slower than with 2.
const writers = 2

// writeGate lets a number of writes into a file run at once.
type writeGate chan struct{}

func newWriteGate(n int) writeGate { return make(writeGate, n) }

func (g writeGate) enter() { g <- struct{}{} }
func (g writeGate) leave() { <-g }

// WriteAt writes p and hands it to the write-behind.
func (t *rawTarget) WriteAt(p []byte, off int64) (int, error) {
	t.gate.enter()
	n, err := t.File.WriteAt(p, off)
	t.gate.leave()
	if err == nil {
		err = t.wb.written(off, n)
	}
	return n, err
}

// WriteAt writes p and hands it to the write-behind.
func (t *qcow2Target) WriteAt(p []byte, off int64) (int, error) {
	t.gate.enter()
	n, err := t.Writer.WriteAt(p, off)
	t.gate.leave()
	if err == nil {
		err = t.wb.written(off, n)
	}
	return n, err
}
