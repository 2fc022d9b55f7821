package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

const benchBytes = 1 << 30

// benchWrite writes benchBytes in 1 MiB chunks from 8 goroutines with write.
func benchWrite(b *testing.B, write func(p []byte, off uint64) error) {
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	var wg sync.WaitGroup
	const workers = 8
	for g := range workers {
		wg.Go(func() {
			for off := uint64(g) * uint64(len(chunk)); off < benchBytes; off += workers * uint64(len(chunk)) {
				if err := write(chunk, off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkQcow2Write1GiB(b *testing.B) {
	b.SetBytes(benchBytes)
	for b.Loop() {
		p := filepath.Join(b.TempDir(), "b.qcow2")
		w, err := Create(p, 2*benchBytes, Options{})
		if err != nil {
			b.Fatal(err)
		}
		var host []uint64 // of each L2 region's first cluster
		for i := uint64(0); i < benchBytes/ClusterSize; {
			h, n, err := w.Add(i, benchBytes/ClusterSize-i)
			if err != nil {
				b.Fatal(err)
			}
			host = append(host, h)
			i += n
		}
		benchWrite(b, func(p []byte, off uint64) error {
			_, err := w.WriteAt(p, int64(host[off/(l2Entries*ClusterSize)]+off%(l2Entries*ClusterSize)))
			return err
		})
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		os.Remove(p)
	}
}

func BenchmarkRawWrite1GiB(b *testing.B) {
	b.SetBytes(benchBytes)
	for b.Loop() {
		p := filepath.Join(b.TempDir(), "b.raw")
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(2 * benchBytes); err != nil {
			b.Fatal(err)
		}
		benchWrite(b, func(p []byte, off uint64) error { _, err := f.WriteAt(p, int64(off)); return err })
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(p)
	}
}
