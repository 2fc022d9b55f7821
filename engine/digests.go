package engine

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"vbackup/chain"
	"vbackup/contentsum"
)

// The files of a disk's chunk digests: every chunk's for a full image,
// only the changed chunks' for an incremental one.
func allDigestsFile(disk string) string     { return disk + ".sums" }
func changedDigestsFile(disk string) string { return disk + ".changed.sums" }

const digestSize, recordSize = 32, 8 + 32

// errDigestsDamaged is digests that are not those of the checksum.
var errDigestsDamaged = errors.New("do not match its checksum")

// digestsAt is disk's chunk digests at backup b, every chunk's (32 bytes
// per MiB), built from the digest files of its chain and proven to be those
// of b's checksum; an error (read everything then) says why they cannot
// be: a file missing or damaged, or a chain that changed size.
func digestsAt(store *chain.Store, b *chain.Backup, disk string) ([]byte, error) {
	links, err := store.Chain(b, disk)
	if err != nil {
		return nil, err
	}
	// From the last link that keeps every chunk's digest: those below it
	// are not needed (a full, or an incremental that had to read all).
	from := 0
	for i, l := range links {
		if d, _ := l.Disk(disk); d.Digests != "" && !d.DigestsChanged {
			from = i
		}
	}
	var all []byte
	for _, l := range links[from:] {
		d, _ := l.Disk(disk)
		if d.Digests == "" {
			return nil, fmt.Errorf("are not kept in backup %s", l.Name())
		}
		data, err := os.ReadFile(l.File(chain.Disk{File: d.Digests}))
		if err != nil {
			return nil, fmt.Errorf("cannot be read (%w)", err)
		}
		if !d.DigestsChanged {
			all = data // a buffer of its own: the records below are laid over it
			continue
		}
		chunks := (d.VirtualSize + contentsum.ChunkSize - 1) / contentsum.ChunkSize
		if uint64(len(all)) != chunks*digestSize || len(data)%recordSize != 0 {
			return nil, errDigestsDamaged
		}
		for r := data; len(r) > 0; r = r[recordSize:] {
			i := binary.BigEndian.Uint64(r)
			if i >= chunks {
				return nil, errDigestsDamaged
			}
			copy(all[i*digestSize:], r[8:recordSize])
		}
	}
	d, _ := b.Disk(disk)
	want, perr := contentsum.Parse(d.Checksum)
	got, err := contentsum.OfDigests(bytes.NewReader(all), d.VirtualSize)
	if perr != nil || err != nil || !got.Equal(want) {
		return nil, errDigestsDamaged
	}
	return all, nil
}

// changedRecords is the Digests writer of an incremental's checksum: of
// every chunk's digest, in order, it keeps the records of the chunks that
// touch a changed range.
type changedRecords struct {
	w       *bufio.Writer
	changed []contentsum.Range
	chunk   uint64 // index of the digest being received
	part    [digestSize]byte
	n       int
}

func newChangedRecords(w io.Writer, changed []contentsum.Range) *changedRecords {
	return &changedRecords{w: bufio.NewWriter(w), changed: changed}
}

func (c *changedRecords) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := copy(c.part[c.n:], p)
		c.n, p = c.n+k, p[k:]
		if c.n < digestSize {
			break
		}
		if c.touched(c.chunk) {
			var rec [recordSize]byte
			binary.BigEndian.PutUint64(rec[:], c.chunk)
			copy(rec[8:], c.part[:])
			if _, err := c.w.Write(rec[:]); err != nil {
				return 0, err
			}
		}
		c.chunk, c.n = c.chunk+1, 0
	}
	return total, nil
}

// touched reports whether chunk i meets a changed range; the chunks come in
// order, so the ranges before it are dropped as it goes.
func (c *changedRecords) touched(i uint64) bool {
	lo, hi := i*contentsum.ChunkSize, (i+1)*contentsum.ChunkSize
	for len(c.changed) > 0 && c.changed[0].Off+c.changed[0].Len <= lo {
		c.changed = c.changed[1:]
	}
	return len(c.changed) > 0 && c.changed[0].Off < hi
}

func (c *changedRecords) Flush() error {
	if c.n != 0 {
		return errors.New("contentsum wrote a partial chunk digest")
	}
	return c.w.Flush()
}

// writeDigests writes a digest file in folder dir, through a temporary file,
// synced, and a rename: a crash leaves the old file or the new one.
func writeDigests(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	// The folder is not synced here: the manifest rewrite that names the
	// file comes next, in the same folder, and syncs it (a journal commit
	// each costs a prune more than its copy).
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// recordsOf is the changed-chunk records of all, for the chunks that meet
// ranges.
func recordsOf(all []byte, ranges []contentsum.Range) []byte {
	var out bytes.Buffer
	c := newChangedRecords(&out, ranges)
	_, _ = c.Write(all)
	_ = c.Flush()
	return out.Bytes()
}

// digestsAfterMerge keeps the digests of next's disk d true when the
// removed backup r below it merges into it, and returns what next's
// manifest is to say of them. It runs while next's chain still reads
// through r, and each file it writes is true of next before and after the
// merge, so a crash anywhere leaves them true:
//   - down (r was a full; next becomes one): every chunk's digests, in a
//     file of their own, which the manifest names once it says full;
//   - up (r's changes go into next): next's changed chunks become r's and
//     its own, in next's own file.
//
// When they cannot be had, the manifest names none: the next backup then
// reads all of the disk once.
func digestsAfterMerge(store *chain.Store, r, next *chain.Backup, d chain.Disk, down bool) (name string, changedForm bool, err error) {
	nd, _ := next.Disk(d.Name)
	if !nd.DigestsChanged {
		return nd.Digests, false, nil // every chunk's already: true of next whatever lies below
	}
	all, aerr := digestsAt(store, next, d.Name)
	if aerr != nil {
		return "", false, nil
	}
	rd, _ := r.Disk(d.Name)
	if down || !rd.DigestsChanged {
		name = allDigestsFile(d.Name)
		return name, false, writeDigests(next.Dir, name, all)
	}
	mine, err1 := os.ReadFile(r.File(chain.Disk{File: rd.Digests}))
	theirs, err2 := os.ReadFile(next.File(chain.Disk{File: nd.Digests}))
	if err1 != nil || err2 != nil {
		return "", false, nil
	}
	chunks := map[uint64]bool{}
	for _, recs := range [][]byte{mine, theirs} {
		for ; len(recs) >= recordSize; recs = recs[recordSize:] {
			chunks[binary.BigEndian.Uint64(recs)] = true
		}
	}
	var ranges []contentsum.Range
	for i := uint64(0); i*digestSize < uint64(len(all)); i++ {
		if chunks[i] {
			ranges = append(ranges, contentsum.Range{Off: i * contentsum.ChunkSize, Len: contentsum.ChunkSize})
		}
	}
	return nd.Digests, true, writeDigests(next.Dir, nd.Digests, recordsOf(all, ranges))
}
