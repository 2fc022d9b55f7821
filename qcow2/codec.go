package qcow2

// The compression of clusters, as QEMU reads it (block/qcow2-threads.c):
// zlib is a raw deflate stream (no zlib header) with a 4 KiB window,
// which QEMU inflates with window bits -12; zstd is one zstd frame per
// cluster. Both come from github.com/klauspost/compress, pure Go (the
// build stays CGO_ENABLED=0), fuzzed and widely used.

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

const (
	compressionZlib = 0 // the header's compression_type
	compressionZstd = 1

	zlibWindow = 1 << 12
)

// codec compresses clusters; safe for concurrent use.
type codec interface {
	kind() byte
	// compress appends src compressed to dst, or returns nil if that
	// takes more than limit bytes.
	compress(dst, src []byte, limit int) []byte
}

func newCodec(name string) (codec, error) {
	switch name {
	case "zlib":
		return zlibCodec{}, nil
	case "zstd":
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		return zstdCodec{enc}, nil
	}
	return nil, fmt.Errorf("qcow2: unknown compression %q: use zlib or zstd", name)
}

type zlibCodec struct{}

func (zlibCodec) kind() byte { return compressionZlib }

// deflater is a deflate writer and the buffer it writes into.
type deflater struct {
	fw  *flate.Writer
	out limitedBuffer
}

var deflaters = newFreeList(func() *deflater {
	d := &deflater{}
	fw, err := flate.NewWriterWindow(&d.out, zlibWindow)
	if err != nil {
		panic(err) // a constant window size in range
	}
	d.fw = fw
	return d
})

func (zlibCodec) compress(dst, src []byte, limit int) []byte {
	d := deflaters.get()
	defer deflaters.put(d)
	d.out = limitedBuffer{b: dst, limit: limit}
	d.fw.Reset(&d.out)
	if _, err := d.fw.Write(src); err != nil {
		return nil
	}
	if err := d.fw.Close(); err != nil {
		return nil
	}
	out := d.out.b
	d.out.b = nil
	return out
}

// limitedBuffer appends what is written to it, up to limit bytes: past
// that, the cluster is not worth compressing and the rest is not.
type limitedBuffer struct {
	b     []byte
	limit int
}

var errFull = errors.New("qcow2: compressed cluster too large")

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > l.limit {
		return 0, errFull
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

type zstdCodec struct{ enc *zstd.Encoder }

func (zstdCodec) kind() byte { return compressionZstd }

func (z zstdCodec) compress(dst, src []byte, limit int) []byte {
	out := z.enc.EncodeAll(src, dst)
	if len(out) > limit {
		return nil
	}
	return out
}

// zstdEncoder is shared by all images: it compresses on as many
// goroutines at once as there are CPUs, each with tables of its own.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault), // zstd's level 3, QEMU's
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithWindowSize(ClusterSize), // nothing to refer to beyond the cluster
		zstd.WithEncoderCRC(true),        // a frame checksum: QEMU then fails a read of rotten data
	)
})
