// Package fetch reads the NBD exports of a pull backup into files: a full
// export into a sparse raw file or a qcow2, an incremental one into a qcow2
// that holds only the changed extents (optionally backed by the previous
// backup of the same disk). Files appear under their final names only when
// complete.
package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"vbackup/contentsum"
	"vbackup/nbd"
	"vbackup/progress"
)

// Disk is one export to fetch.
type Disk struct {
	Name    string // disk target, for messages and progress
	URI     string // the export's NBD URI
	Bitmap  string // incremental: the meta context listing changed blocks; "" for a full export
	Path    string // the file to write; must not exist
	Format  string // "raw" or "qcow2"
	Backing string // qcow2 of an incremental: the previous backup of the disk, recorded as given; a relative name is relative to Path's folder, as QEMU reads it; "" for none
	// Compress is "zlib" or "zstd" for a qcow2 whose clusters are
	// compressed where that makes them smaller (QEMU reads zstd from 5.1
	// on), "" for none. A raw file cannot be compressed.
	Compress string
	// Sum computes the content checksum of the file as the copy writes
	// it (DiskResult.Sum), instead of a caller's reading it back: only for
	// a file with no backing file, whose unwritten parts read as zeroes.
	Sum bool
}

// Options qualify Run.
type Options struct {
	Connections int // NBD connections per disk (more only if the server allows multi-conn)
	InFlight    int // requests in flight per disk; 0: perConnection for each connection opened
	Request     int // bytes per request
	Printer     progress.Printer
	Now         func() time.Time
	Every       time.Duration // between progress samples
	// KeepCache leaves the files in the page cache, for a caller that
	// reads them back at once (a checksum pass): without it, each write
	// leaves the page cache as the copy goes, so that a fetch does not
	// flood it with a disk that is not read again.
	KeepCache bool
	// What is copied, for the progress output: "" for a pull backup's
	// exports, "restore" for a restore from a backup chain.
	What string
	// Limit, if set, caps the rate of the data read from the exports,
	// for every disk together (and for every other fetch it is given to).
	Limit *nbd.Limiter
	// Attempts is how many times a disk whose NBD connection was lost
	// (the server closed it) is fetched, from a new connection: 0 means
	// 3; 1 never fetches twice.
	Attempts int
	// Notes hears of each new attempt.
	Notes progress.Notifier
}

// Result is what a fetch copied.
type Result struct {
	Disks []DiskResult
}

// DiskResult is one disk's part.
type DiskResult struct {
	Name    string
	Path    string
	Size    uint64 // the disk's virtual size
	Copied  uint64 // bytes of data read from the export
	Zeroed  uint64 // bytes written as zeroes (changed blocks that read as zero)
	Extents int
	// With Disk.Sum, Summed says the checksum of what was written is
	// Sum, with every chunk's digest (contentsum's form), and that the
	// data went where Layout says (nil for raw), for the caller to check
	// that the file's own map agrees (a qcow2's allocation tables are the
	// writer's; the bytes summed are the ones written there). Not Summed:
	// the file must be read back (a disk too fragmented for its layout to
	// be kept).
	Summed  bool
	Sum     contentsum.Sum
	Digests []byte
	Layout  []Placement
}

// Placement says where a run of the disk's content lies in the file.
type Placement struct {
	Off, Len uint64 // the range of the disk
	To       uint64 // its offset in the file
}

const baseAllocation = "base:allocation"

// Run fetches every disk, concurrently, and returns only when all are
// complete. On failure it leaves no file behind: neither what it was
// writing nor the files of disks that were complete, so that it can be
// run again as it was.
func Run(ctx context.Context, disks []Disk, opts Options) (Result, error) {
	opts = defaults(opts)
	unlock, err := lockFolders(disks)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	for _, d := range disks {
		if _, err := os.Lstat(d.Path); err == nil {
			return Result{}, fmt.Errorf("%s exists already; vbackup never writes over a backup: move it away or fetch into another folder", d.Path)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make([]*diskJob, len(disks))
	for i, d := range disks {
		jobs[i] = &diskJob{disk: d, opts: opts}
	}
	start := opts.Now()
	stopSampling := sample(ctx, jobs, opts)
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = j.run(ctx); errs[i] != nil {
				cancel() // one disk failing ends the fetch
			}
		}()
	}
	wg.Wait()
	stopSampling()
	res := Result{}
	var total uint64
	for _, j := range jobs {
		res.Disks = append(res.Disks, j.result)
		total += j.result.Copied
	}
	err = firstError(errs)
	if err != nil {
		for _, j := range jobs {
			if j.placed {
				os.Remove(j.disk.Path) // the folder is locked: it is ours
			}
		}
	}
	final := progress.Result{At: opts.Now(), Elapsed: opts.Now().Sub(start), Bytes: total, State: progress.JobCompleted, What: opts.What}
	if err != nil {
		final.State, final.Error = progress.JobFailed, err.Error()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			final.State = progress.JobCancelled
		}
	}
	opts.Printer.Update(snapshot(jobs, opts.Now(), opts.What))
	opts.Printer.Finish(final)
	return res, err
}

func defaults(o Options) Options {
	if o.Connections <= 0 {
		o.Connections = 4
	}
	if o.Request <= 0 {
		o.Request = 256 << 10 // larger requests leave the CPU cache between read and write (measured: slower)
	}
	if o.Printer == nil {
		o.Printer = progress.NewQuiet()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Every <= 0 {
		o.Every = 250 * time.Millisecond
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Notes == nil {
		o.Notes = progress.NewNotifier(nil, nil)
	}
	return o
}

// firstError prefers the error that caused the others (they see a
// cancelled context).
func firstError(errs []error) error {
	var cancelled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled):
			cancelled = err
		default:
			return err
		}
	}
	return cancelled
}

// diskJob fetches one disk.
type diskJob struct {
	disk   Disk
	opts   Options
	result DiskResult
	placed bool // its file is complete under its final name

	total atomic.Uint64 // bytes to copy, once the map is known
	done  atomic.Uint64
	state atomic.Value // progress.DiskState
}

func (j *diskJob) run(ctx context.Context) (err error) {
	j.state.Store(progress.DiskRunning)
	defer func() {
		if err != nil {
			j.state.Store(progress.DiskFailed)
			if errors.Is(err, context.Canceled) {
				j.state.Store(progress.DiskCancelled)
			}
			err = fmt.Errorf("disk %s: %w", j.disk.Name, err)
		} else {
			j.state.Store(progress.DiskDone)
		}
	}()
	for attempt := 1; ; attempt++ {
		err = j.once(ctx)
		if err == nil || attempt >= j.opts.Attempts || !errors.Is(err, nbd.ErrDisconnected) || ctx.Err() != nil {
			if err != nil && attempt > 1 {
				err = fmt.Errorf("%w (attempt %d of %d)", err, attempt, j.opts.Attempts)
			}
			return err
		}
		// The export is the job's point in time, whoever reads it and
		// however often: read again from the start, it gives the same
		// data. What the lost connections wrote is dropped with the file.
		pause := time.Duration(attempt) * time.Second
		j.opts.Notes.Notef("disk %s: %v; fetching it again from a new connection in %s (attempt %d of %d)", j.disk.Name, err, pause, attempt+1, j.opts.Attempts)
		j.done.Store(0)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(pause):
		}
	}
}

// once fetches the disk from a connection of its own.
func (j *diskJob) once(ctx context.Context) (err error) {
	j.result = DiskResult{Name: j.disk.Name, Path: j.disk.Path}
	contexts := []string{baseAllocation}
	if j.disk.Bitmap != "" {
		contexts = append(contexts, j.disk.Bitmap)
	}
	src, err := openSource(ctx, j.disk.URI, contexts, j.opts.Connections)
	if err != nil {
		return err
	}
	defer src.close()
	size := src.conns[0].Export().Size
	j.result.Size = size
	partial := j.disk.Path + ".partial"
	if _, err := os.Lstat(partial); err == nil {
		// A .partial is never a backup: it is what a failed fetch left.
		if err := os.Remove(partial); err != nil {
			return err
		}
	}
	dst, err := createTarget(partial, j.disk, size, !j.opts.KeepCache)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			dst.abort()
			os.Remove(partial)
		}
	}()
	var stream *contentsum.Stream
	if j.disk.Sum {
		if j.disk.Backing != "" {
			return errors.New("a file with a backing file cannot be summed as it is written: it reads its backing file where nothing was written")
		}
		stream = contentsum.NewStream(size)
	}
	if err := j.copyDisk(ctx, src, dst, stream); err != nil {
		return err
	}
	if err := dst.finish(); err != nil {
		return fmt.Errorf("finishing %s: %w", partial, err)
	}
	if stream != nil {
		var digests bytes.Buffer
		if j.result.Sum, err = stream.Sum(&digests); err != nil {
			return err
		}
		j.result.Digests = digests.Bytes()
		j.result.Layout, j.result.Summed = dst.placements()
	}
	if err := place(partial, j.disk.Path); err != nil {
		return err
	}
	j.placed = true
	return syncDir(filepath.Dir(j.disk.Path))
}

// source is one or more connections to an export.
type source struct {
	conns []*nbd.Conn
}

func openSource(ctx context.Context, uri string, contexts []string, n int) (*source, error) {
	first, err := nbd.Dial(ctx, uri, nbd.Options{MetaContexts: contexts})
	if err != nil {
		return nil, err
	}
	for _, want := range contexts {
		if !hasContext(first.MetaContexts(), want) {
			first.Close()
			return nil, fmt.Errorf("the export %s does not offer the meta context %q (is this the pull job's export?)", uri, want)
		}
	}
	s := &source{conns: []*nbd.Conn{first}}
	if !first.Export().Flags.CanMultiConn() || n <= 1 {
		return s, nil
	}
	// At once: through an SSH forward each handshake is a few round
	// trips (0.18 s for three, one after the other, on a loaded host).
	more := make([]*nbd.Conn, n-1)
	var wg sync.WaitGroup
	for i := range more {
		wg.Go(func() {
			if c, err := first.Clone(ctx); err == nil {
				more[i] = c
			} // fewer connections is still correct
		})
	}
	wg.Wait()
	for _, c := range more {
		if c != nil {
			s.conns = append(s.conns, c)
		}
	}
	return s, nil
}

func (s *source) close() {
	for _, c := range s.conns {
		c.Close()
	}
}

func hasContext(list []string, name string) bool {
	for _, c := range list {
		if c == name {
			return true
		}
	}
	return false
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
