package fetch

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// mixedDisk writes a sparse raw file of size bytes: per 1 MiB, in turn,
// text-like data, random data, a 2 KiB block repeated, zeroes written
// out, a hole, and 4 KiB of text every 32 KiB (holes in each cluster).
// It returns how many clusters compress (text, repeated) and how many
// do not (random).
func mixedDisk(t testing.TB, path string, size int64) (compressible, incompressible int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	words := strings.Fields("disk backup qcow2 cluster zstd zlib kernel log entry error warning the a of to in is 0 1 2 3 4 5 6 7 8 9 /usr/lib/x86_64-linux-gnu")
	const mib = 1 << 20
	buf := make([]byte, mib)
	r := rand.New(rand.NewPCG(1, 2))
	for off := int64(0); off < size; off += mib {
		n := min(mib, size-off)
		switch off / mib % 6 {
		case 0, 5:
			b := buf[:0]
			for len(b) < mib {
				b = append(append(b, words[r.IntN(len(words))]...), " \n"[r.IntN(9)/8])
			}
			compressible += int((n + clusterSize - 1) / clusterSize)
			if off/mib%6 == 5 {
				for o := int64(0); o < n; o += 32 << 10 {
					if _, err := f.WriteAt(buf[o:o+4096], off+o); err != nil {
						t.Fatal(err)
					}
				}
				continue
			}
		case 1:
			for i := 0; i < mib; i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
			}
			incompressible += int((n + clusterSize - 1) / clusterSize)
		case 2:
			for i := range 2048 { // zlib's window is 4 KiB: a 4 KiB block would not repeat in it
				buf[i] = byte(r.Uint32())
			}
			for i := 2048; i < mib; i += 2048 {
				copy(buf[i:], buf[:2048])
			}
			compressible += int((n + clusterSize - 1) / clusterSize)
		case 3:
			clear(buf)
		case 4:
			continue
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	return compressible, incompressible
}

type imageCheck struct {
	CheckErrors        int `json:"check-errors"`
	Leaks              int `json:"leaks"`
	Corruptions        int `json:"corruptions"`
	CompressedClusters int `json:"compressed-clusters"`
	AllocatedClusters  int `json:"allocated-clusters"`
}

// checkCompressed runs qemu-img check and info on a compressed image.
func checkCompressed(t *testing.T, path, compression string) imageCheck {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "--output=json", "-U", path).Output()
	var c imageCheck
	if jerr := json.Unmarshal(out, &c); err != nil || jerr != nil || c.CheckErrors+c.Leaks+c.Corruptions != 0 {
		t.Fatalf("qemu-img check %s: %v %v\n%s", path, err, jerr, out)
	}
	var info struct {
		FormatSpecific struct {
			Data struct {
				CompressionType string `json:"compression-type"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "-U", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	if got := info.FormatSpecific.Data.CompressionType; got != compression {
		t.Errorf("%s: compression type %q, want %q", path, got, compression)
	}
	return c
}

// A full fetch into compressed qcow2 images, then an incremental over
// it: each reads as the disk did, holds compressed clusters where the
// data compresses and plain ones where it does not, and is smaller than
// the same fetch uncompressed.
func TestFetchCompressed(t *testing.T) {
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	const size = 40<<20 + 1536 // not a whole number of clusters
	raw := filepath.Join(dir, "disk.raw")
	compressible, incompressible := mixedDisk(t, raw, size)
	img := filepath.Join(dir, "disk.qcow2")
	// 4 KiB clusters: the export's reads of 64 KiB hold holes.
	testbed.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw, img)
	testbed.Run(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")

	uri, stop := qemuNBD(t, img)
	plain := filepath.Join(dir, "plain.qcow2")
	fetchOne(t, Disk{Name: "vda", URI: uri, Path: plain, Format: "qcow2"})
	plainSize := fileSize(t, plain)
	for _, compression := range []string{"zlib", "zstd"} {
		out := filepath.Join(dir, "full-"+compression+".qcow2")
		fetchOne(t, Disk{Name: "vda", URI: uri, Path: out, Format: "qcow2", Compress: compression})
		compare(t, img, out, "qcow2")
		c := checkCompressed(t, out, compression)
		if c.CompressedClusters != compressible || c.AllocatedClusters != compressible+incompressible {
			t.Errorf("%s: %d compressed clusters of %d allocated, want %d of %d", compression, c.CompressedClusters, c.AllocatedClusters, compressible, compressible+incompressible)
		}
		if s := fileSize(t, out); s >= plainSize*3/4 {
			t.Errorf("%s: %d bytes, uncompressed %d", compression, s, plainSize)
		}
	}
	stop()

	// Changed since b0: data that compresses, zeroes, and a partial last cluster.
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x66 2000 100", "-c", "write -z 1M 64k",
		"-c", "write -P 0x77 7M 1M", "-c", "write -P 0x88 41942528 512", img)
	uri, _ = qemuNBD(t, img, "-B", "b0")
	for _, compression := range []string{"zlib", "zstd"} {
		out := filepath.Join(dir, "inc-"+compression+".qcow2")
		fetchOne(t, Disk{Name: "vda", URI: uri, Bitmap: "qemu:dirty-bitmap:b0", Path: out, Format: "qcow2",
			Backing: "full-" + compression + ".qcow2", Compress: compression})
		compare(t, img, out, "qcow2")
		// 2000+100 is in one cluster, 7M+1M 16 clusters, the last one.
		if c := checkCompressed(t, out, compression); c.CompressedClusters != 18 || c.AllocatedClusters != 18 {
			t.Errorf("%s incremental: %d compressed clusters of %d allocated, want 18 of 18", compression, c.CompressedClusters, c.AllocatedClusters)
		}
	}

	_, err := Run(context.Background(), []Disk{{Name: "vda", URI: uri, Path: filepath.Join(dir, "x.raw"), Format: "raw", Compress: "zstd"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "a raw file cannot be compressed; use --format qcow2") {
		t.Errorf("fetch of a compressed raw file: %v", err)
	}
	_, err = Run(context.Background(), []Disk{{Name: "vda", URI: uri, Path: filepath.Join(dir, "x.qcow2"), Format: "qcow2", Compress: "lz4"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "use zlib or zstd") {
		t.Errorf("fetch with compression lz4: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "x.*")); len(entries) > 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
