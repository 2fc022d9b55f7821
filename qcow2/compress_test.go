package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"vbackup/internal/testbed"
)

// kind is what a guest cluster of a test image holds.
type kind byte

const (
	hole     kind = iota // not added: reads from the backing file
	zeroed               // AddZero
	zeroData             // data that reads as zeroes: becomes a zero cluster
	text                 // words: compresses well
	repeated             // a 2 KiB block over and over
	random               // does not compress: stored as it is
)

var words = strings.Fields("the quick brown fox jumps over a lazy dog while backups of disks are kept for years in qcow2 images read by qemu 0 1 2 3 4 5 6 7 8 9 error warning info debug")

// content is the data of guest cluster index of kind k.
func content(k kind, index uint64) []byte {
	r := rand.New(rand.NewPCG(index, uint64(k)))
	switch k {
	case text:
		b := make([]byte, 0, ClusterSize+64)
		for len(b) < ClusterSize {
			for x := r.Uint64(); x != 0 && len(b) < ClusterSize; x >>= 6 {
				b = append(append(b, words[x%64%uint64(len(words))]...), " \n"[x>>5&1&(x>>4)])
			}
		}
		return b[:ClusterSize]
	case repeated:
		block := make([]byte, 2048)
		for i := range block {
			block[i] = byte(r.Uint32())
		}
		return bytes.Repeat(block, ClusterSize/len(block))
	case random:
		b := make([]byte, ClusterSize)
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], r.Uint64())
		}
		return b
	}
	return make([]byte, ClusterSize)
}

// mixedSize is the virtual size of mixedKinds: two L2 regions and a last
// cluster of 1536 bytes.
const mixedSize = 600<<20 + 1536

// mixedKinds is every kind, around the start, across the first region's
// end and up to the disk's end; the rest is holes.
func mixedKinds() map[uint64]kind {
	cycle := []kind{text, random, zeroData, repeated, text, zeroed, hole, random, text, repeated, zeroData, text}
	m := map[uint64]kind{}
	for _, span := range [][2]uint64{{0, 150}, {8150, 8230}, {9500, 9601}} {
		for i := span[0]; i < span[1]; i++ {
			if k := cycle[i%uint64(len(cycle))]; k != hole {
				m[i] = k
			}
		}
	}
	m[mixedSize/ClusterSize] = text // the partial last cluster
	return m
}

// dataOf is what guest cluster i holds, cut at the disk's end.
func dataOf(k kind, i, size uint64) []byte {
	return content(k, i)[:min(ClusterSize, size-i*ClusterSize)]
}

// sortedIndices lists the clusters of kinds in guest order.
func sortedIndices(kinds map[uint64]kind, size uint64) []uint64 {
	var idx []uint64
	for i := range ceilDiv(size, ClusterSize) {
		if _, ok := kinds[i]; ok {
			idx = append(idx, i)
		}
	}
	return idx
}

// writeCompressed writes kinds as a copy does: clusters added in guest
// order, data written by 8 goroutines in any order. Half the first
// region's data is written while its L2 table is in memory, the rest
// once the layout has left it (so into the table on disk).
func writeCompressed(t *testing.T, path string, size uint64, kinds map[uint64]kind, opts Options) *Writer {
	t.Helper()
	w, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	idx := sortedIndices(kinds, size)
	var firstRegion, rest []uint64
	for _, i := range idx {
		if i < l2Entries {
			firstRegion = append(firstRegion, i)
		} else {
			rest = append(rest, i)
		}
	}
	add := func(list []uint64) []uint64 {
		var data []uint64
		for _, i := range list {
			var err error
			switch kinds[i] {
			case zeroed:
				err = w.AddZero(i, 1)
			default:
				_, err = w.AddData(i, 1)
				data = append(data, i)
			}
			if err != nil {
				w.Abort()
				t.Fatal(err)
			}
		}
		return data
	}
	write := func(list []uint64) {
		jobs := make(chan uint64)
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := range jobs {
					if err := w.WriteClusters(i, dataOf(kinds[i], i, size)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for _, j := range rand.New(rand.NewPCG(1, 2)).Perm(len(list)) {
			jobs <- list[j]
		}
		close(jobs)
		wg.Wait()
		close(errs)
		for err := range errs {
			w.Abort()
			t.Fatal(err)
		}
	}
	d0 := add(firstRegion)
	write(d0[:len(d0)/2])
	write(append(d0[len(d0)/2:], add(rest)...))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || uint64(st.Size()) != w.HostSize() {
		t.Fatalf("file size %v (%v), want %d", st.Size(), err, w.HostSize())
	}
	return w
}

// writePlain writes the same clusters into a plain image.
func writePlain(t *testing.T, path string, size uint64, kinds map[uint64]kind, opts Options) {
	t.Helper()
	w, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range sortedIndices(kinds, size) {
		if kinds[i] == zeroed {
			if err := w.AddZero(i, 1); err != nil {
				t.Fatal(err)
			}
			continue
		}
		host, _, err := w.Add(i, 1)
		if err == nil {
			_, err = w.WriteAt(dataOf(kinds[i], i, size), int64(host))
		}
		if err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

type checkResult struct {
	CheckErrors        int `json:"check-errors"`
	Leaks              int `json:"leaks"`
	Corruptions        int `json:"corruptions"`
	CompressedClusters int `json:"compressed-clusters"`
	AllocatedClusters  int `json:"allocated-clusters"`
}

// qemuCheck runs qemu-img check, which fails t on any error or leak.
func qemuCheck(t *testing.T, path string) checkResult {
	t.Helper()
	testbed.Need(t, "qemu-img")
	out, err := exec.Command("qemu-img", "check", "--output=json", path).Output()
	var r checkResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("qemu-img check: %v %v: %s", err, jerr, out)
	}
	if err != nil || r.CheckErrors != 0 || r.Leaks != 0 || r.Corruptions != 0 {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
	return r
}

type mapEntry struct {
	Start, Length uint64
	Depth         int
	Present, Zero bool
	Data          bool
	Offset        *uint64
}

// qemuMap is qemu-img map's view of each guest cluster of the image
// itself: 'c' compressed (data without a host offset: QEMU 7.2 does not
// say "compressed"), 'd' data, 'z' a zero cluster, '-' from the backing
// file or unallocated.
func qemuMap(t *testing.T, path string, size uint64) []byte {
	t.Helper()
	var entries []mapEntry
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "map", "--output=json", path)), &entries); err != nil {
		t.Fatal(err)
	}
	m := bytes.Repeat([]byte{'?'}, int(ceilDiv(size, ClusterSize)))
	for _, e := range entries {
		c := byte('-')
		switch {
		case e.Depth > 0 || !e.Present:
		case e.Data && e.Offset == nil:
			c = 'c'
		case e.Data:
			c = 'd'
		case e.Zero:
			c = 'z'
		}
		for i := e.Start / ClusterSize; i < ceilDiv(e.Start+e.Length, ClusterSize); i++ {
			m[i] = c
		}
	}
	return m
}

func TestCompressed(t *testing.T) {
	needQemu(t)
	kinds := mixedKinds()
	want := bytes.Repeat([]byte{'-'}, int(ceilDiv(mixedSize, ClusterSize)))
	compressible := 0
	for i, k := range kinds {
		want[i] = map[kind]byte{zeroed: 'z', zeroData: 'z', text: 'c', repeated: 'c', random: 'd'}[k]
		if want[i] == 'c' {
			compressible++
		}
	}
	for _, compression := range []string{"zlib", "zstd"} {
		for _, backed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/backing=%v", compression, backed), func(t *testing.T) {
				dir := t.TempDir()
				var opts Options
				if backed {
					// Every 7th cluster of the backing file holds data:
					// the overlay's holes show it, its zero clusters hide it.
					base := map[uint64]kind{}
					for i := uint64(0); i < ceilDiv(mixedSize, ClusterSize); i += 7 {
						base[i] = repeated
					}
					writePlain(t, filepath.Join(dir, "base.qcow2"), mixedSize, base, Options{})
					opts = Options{Backing: "base.qcow2", BackingFormat: "qcow2"}
				}
				plain := filepath.Join(dir, "plain.qcow2")
				writePlain(t, plain, mixedSize, kinds, opts)
				comp := filepath.Join(dir, compression+".qcow2")
				opts.Compression = compression
				w := writeCompressed(t, comp, mixedSize, kinds, opts)

				r := qemuCheck(t, comp)
				if r.CompressedClusters != compressible {
					t.Errorf("qemu-img check: %d compressed clusters, want %d", r.CompressedClusters, compressible)
				}
				checkImage(t, comp, mixedSize, opts.Backing)
				if got := compressionType(t, comp); got != compression {
					t.Errorf("qemu-img info: compression type %q, want %q", got, compression)
				}
				if got := qemuMap(t, comp, mixedSize); !bytes.Equal(got, want) {
					t.Errorf("qemu-img map, per cluster (c compressed, d data, z zero, - not in the image):\n got %s\nwant %s", got, want)
				}
				if out := testbed.Run(t, "qemu-img", "compare", plain, comp); !strings.Contains(out, "Images are identical") {
					t.Errorf("qemu-img compare: %s", out)
				}
				st, _ := os.Stat(plain)
				t.Logf("%s: %d bytes, plain %d", compression, w.HostSize(), st.Size())
				if w.HostSize() >= uint64(st.Size()) {
					t.Errorf("compressed image of %d bytes, plain %d", w.HostSize(), st.Size())
				}
			})
		}
	}
}

// compressionType is the compression type qemu-img info reports.
func compressionType(t *testing.T, path string) string {
	t.Helper()
	var info struct {
		FormatSpecific struct {
			Data struct {
				CompressionType string `json:"compression-type"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return info.FormatSpecific.Data.CompressionType
}
