package fetch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"vbackup/qcow2"
)

// target is the file being written.
type target interface {
	writeAt(ctx context.Context, p []byte, off uint64) error
	zero(ctx context.Context, off, n uint64) error
	finish(ctx context.Context) error // flush to stable storage
	abort()
}

// createTarget makes the file to write and returns the plan fitted to it.
func createTarget(path, format, backing string, size uint64, p plan) (target, plan, error) {
	switch format {
	case "raw":
		if backing != "" {
			return nil, nil, fmt.Errorf("a raw file cannot have a backing file; use --format qcow2")
		}
		t, err := newRawTarget(path, size)
		return t, p, err
	case "qcow2":
		aligned, clusters := alignPlan(p, size)
		t, err := newQcow2Target(path, backing, size, clusters)
		return t, aligned, err
	}
	return nil, nil, fmt.Errorf("unknown format %q: use raw or qcow2", format)
}

// rawTarget is a sparse raw file: what is not written reads as zeroes.
type rawTarget struct{ f *os.File }

func newRawTarget(path string, size uint64) (*rawTarget, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, err
	}
	return &rawTarget{f: f}, nil
}

func (t *rawTarget) writeAt(_ context.Context, p []byte, off uint64) error {
	_, err := t.f.WriteAt(p, int64(off))
	return err
}

func (t *rawTarget) zero(_ context.Context, off, n uint64) error {
	// The file is new and sparse: punching keeps it so, and is exact.
	return unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n))
}

func (t *rawTarget) finish(context.Context) error {
	if err := t.f.Sync(); err != nil {
		return err
	}
	return t.f.Close()
}

func (t *rawTarget) abort() { t.f.Close() }

// qcow2Target is a new qcow2 image whose clusters are all known before it
// is written (qcow2.Writer): data clusters land at precomputed offsets,
// concurrently, as in a raw file; the metadata is written last. Going
// through qemu-nbd instead measured 2.5x slower than qemu-img convert.
type qcow2Target struct{ w *qcow2.Writer }

func newQcow2Target(path, backing string, size uint64, clusters []qcow2.Cluster) (*qcow2Target, error) {
	var opts qcow2.Options
	if backing != "" {
		// QEMU reads a relative backing name from the image's folder.
		resolved := backing
		if !filepath.IsAbs(backing) {
			resolved = filepath.Join(filepath.Dir(path), backing)
		}
		if _, err := os.Stat(resolved); err != nil {
			return nil, fmt.Errorf("backing file: %w", err)
		}
		opts = qcow2.Options{Backing: backing, BackingFormat: "qcow2"}
	}
	w, err := qcow2.Create(path, size, clusters, opts)
	if err != nil {
		return nil, err
	}
	return &qcow2Target{w: w}, nil
}

func (t *qcow2Target) writeAt(_ context.Context, p []byte, off uint64) error {
	if rem := len(p) % qcow2.ClusterSize; rem != 0 {
		// The disk's last cluster is partial: pad it.
		padded := make([]byte, len(p)+qcow2.ClusterSize-rem)
		copy(padded, p)
		p = padded
	}
	return t.w.WriteAt(p, off)
}

// zero has nothing to write: zero clusters are in the image's metadata.
func (t *qcow2Target) zero(context.Context, uint64, uint64) error { return nil }

func (t *qcow2Target) finish(context.Context) error { return t.w.Close() }

func (t *qcow2Target) abort() { t.w.Abort() }
