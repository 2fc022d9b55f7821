package contentsum

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"vbackup/internal/testbed"
)

// BenchmarkFile sums a 512 MiB image of which every other 4 MiB is random
// data and the rest never written. MB/s is over the virtual size;
// data-MB/s over the data alone.
func BenchmarkFile(b *testing.B) {
	testbed.Need(b, "qemu-img", "qemu-nbd")
	const size, block = 512 * mib, 4 * mib
	dir := b.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, block)
	for off := int64(0); off < size; off += 2 * block {
		rng.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow)

	for _, img := range []struct{ path, format string }{{qcow, "qcow2"}, {raw, "raw"}} {
		b.Run(img.format, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, err := File(b.Context(), img.path, img.format, Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size/2)/1e6/(b.Elapsed().Seconds()/float64(b.N)), "data-MB/s")
		})
	}
}
