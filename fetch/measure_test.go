package fetch

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"vbackup/internal/testbed"
)

// BenchmarkCompression times fetches of one export into a plain, a zlib
// and a zstd qcow2 image, alternated, and qemu-img convert -c for
// reference, on a disk that resembles a real one (realDisk), and logs the
// table. A benchmark, so that only -bench runs it, as root (it drops the
// page cache before each run); its own runs are alternated, whatever b.N:
//
//	VBACKUP_MEASURE_MB=2048 VBACKUP_MEASURE_RUNS=3 go test -run '^$' -bench Compression -benchtime 1x -v -timeout 60m ./fetch/
func BenchmarkCompression(t *testing.B) {
	mb, _ := strconv.Atoi(os.Getenv("VBACKUP_MEASURE_MB"))
	mb = cmp.Or(mb, 2048)
	runs, _ := strconv.Atoi(os.Getenv("VBACKUP_MEASURE_RUNS"))
	runs = max(runs, 1)
	testbed.Need(t, "qemu-img", "qemu-nbd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	size := int64(mb) << 20
	mix := realDisk(t, raw, size)
	img := filepath.Join(dir, "disk.qcow2")
	testbed.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img)
	os.Remove(raw)
	uri, _ := qemuNBD(t, img)

	type method struct {
		name string
		run  func(out string) error
	}
	fetchInto := func(compress string) func(string) error {
		return func(out string) error {
			_, err := Run(context.Background(), []Disk{{Name: "vda", URI: uri, Path: out, Format: "qcow2", Compress: compress}}, Options{})
			return err
		}
	}
	convert := func(typ string) func(string) error {
		return func(out string) error {
			b, err := exec.Command("qemu-img", "convert", "-t", "writeback", "-c", "-O", "qcow2", "-o", "compression_type="+typ, uri, out).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, b)
			}
			return nil
		}
	}
	methods := []method{
		{"fetch, plain", fetchInto("")},
		{"fetch, zlib", fetchInto("zlib")},
		{"fetch, zstd", fetchInto("zstd")},
		{"qemu-img convert -c zlib", convert("zlib")},
		{"qemu-img convert -c zstd", convert("zstd")},
	}
	times := make([][]time.Duration, len(methods))
	sizes := make([][2]int64, len(methods))
	for r := range runs {
		for i, m := range methods {
			out := filepath.Join(dir, fmt.Sprintf("out-%d-%d.qcow2", r, i))
			settle()
			start := time.Now()
			if err := m.run(out); err != nil {
				t.Fatalf("%s: %v", m.name, err)
			}
			times[i] = append(times[i], time.Since(start))
			var st syscall.Stat_t
			if err := syscall.Stat(out, &st); err != nil {
				t.Fatal(err)
			}
			sizes[i] = [2]int64{st.Size, st.Blocks * 512}
			if r == runs-1 && i < 3 {
				testbed.Run(t, "qemu-img", "compare", "-U", img, out)
			}
			os.Remove(out)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d MiB disk: %s; median of %d alternated runs, page cache dropped before each\n", mb, mix, runs)
	fmt.Fprintf(&b, "%-26s %10s %10s %7s %8s  %s\n", "method", "file MiB", "disk MiB", "ratio", "time", "runs")
	for i, m := range methods {
		ts := slices.Clone(times[i])
		slices.Sort(ts)
		var all []string
		for _, d := range times[i] {
			all = append(all, fmt.Sprintf("%.2f", d.Seconds()))
		}
		fmt.Fprintf(&b, "%-26s %10.1f %10.1f %7.3f %7.2fs  %s\n", m.name, float64(sizes[i][0])/(1<<20), float64(sizes[i][1])/(1<<20),
			float64(sizes[i][1])/float64(sizes[0][1]), ts[len(ts)/2].Seconds(), strings.Join(all, " "))
	}
	t.Log(b.String())
}

// settle writes back what the previous run left and drops the page
// cache, where allowed, so that every run starts from the same state.
func settle() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// realDisk writes a sparse raw file of size bytes that resembles a used
// disk, in 4 MiB stretches drawn at random: text (logs, sources,
// configuration), binaries (skewed bytes with runs of zeroes, as code and
// tables), blocks that repeat (a 4 KiB one, and sector-sized records),
// random data (compressed or encrypted files) and holes. It returns the
// mix it made.
func realDisk(t testing.TB, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	words := strings.Fields(`the of and to in is for that with on as by this be are from at or an it not
		error warning info debug kernel: systemd[1]: Started Session user root /usr/lib/x86_64-linux-gnu/ /var/log/
		func return if else struct int const import package 0 1 2 3 4 5 6 7 8 9 10 255 1024 0x7f = { } ( ) ; :`)
	const stretch = 4 << 20
	kinds := []struct {
		name   string
		weight int
	}{{"text", 25}, {"binary", 15}, {"repeated", 10}, {"random", 30}, {"hole", 20}}
	made := map[string]int64{}
	buf := make([]byte, stretch)
	r := rand.New(rand.NewPCG(7, 11))
	for off := int64(0); off < size; off += stretch {
		k, pick := "", r.IntN(100)
		for _, kk := range kinds {
			if pick < kk.weight {
				k = kk.name
				break
			}
			pick -= kk.weight
		}
		made[k] += stretch
		switch k {
		case "text":
			b := buf[:0]
			for len(b) < stretch {
				b = append(b, words[r.IntN(len(words))]...)
				b = append(b, " \n"[min(1, r.IntN(12)/11)])
			}
		case "binary":
			for i := range buf {
				v := r.ExpFloat64() * 12
				if r.IntN(16) == 0 {
					v = float64(r.IntN(256))
				}
				buf[i] = byte(min(v, 255))
			}
			for z := 0; z < 64; z++ {
				o := r.IntN(stretch - 8192)
				clear(buf[o : o+r.IntN(8192)])
			}
		case "repeated":
			half := stretch / 2
			for i := range 4096 {
				buf[i] = byte(r.Uint32())
			}
			for i := 4096; i < half; i += 4096 {
				copy(buf[i:], buf[:4096])
			}
			for i := half; i < stretch; i += 512 { // records: a header, a counter, padding
				copy(buf[i:], "RECORD\x00\x01")
				binary.LittleEndian.PutUint64(buf[i+8:], uint64(i))
				clear(buf[i+16 : i+512])
			}
		case "random":
			for i := 0; i < stretch; i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
			}
		case "hole":
			continue
		}
		n := min(stretch, size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	var parts []string
	for _, kk := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d MiB", kk.name, made[kk.name]>>20))
	}
	return strings.Join(parts, ", ")
}
