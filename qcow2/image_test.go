package qcow2

// Checks of written images through qemu-img and qemu-io, and helpers
// that build them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

func needQemu(tb testing.TB) {
	tb.Helper()
	for _, t := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(t); err != nil {
			if os.Getenv("CI") == "true" {
				tb.Fatalf("%s not installed", t)
			}
			tb.Skipf("%s not installed", t)
		}
	}
}

// pattern returns cluster data for index: a byte derived from the index.
func patByte(index uint64) byte { return byte(index*7 + 1) }

func pattern(index uint64) []byte { return bytes.Repeat([]byte{patByte(index)}, ClusterSize) }

type imageInfo struct {
	VirtualSize     uint64 `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	FormatSpecific  struct {
		Data struct {
			Compat string `json:"compat"`
		} `json:"data"`
	} `json:"format-specific"`
}

// checkImage runs qemu-img check and info and verifies the basic properties.
func checkImage(t *testing.T, path string, size uint64, backing string) {
	t.Helper()
	out := testbed.Run(t, "qemu-img", "check", path)
	if !strings.Contains(out, "No errors were found") {
		t.Fatalf("qemu-img check: %s", out)
	}
	var info imageInfo
	if err := json.Unmarshal([]byte(testbed.Run(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != size {
		t.Errorf("virtual size %d, want %d", info.VirtualSize, size)
	}
	if info.FormatSpecific.Data.Compat != "1.1" {
		t.Errorf("compat %q, want 1.1", info.FormatSpecific.Data.Compat)
	}
	if info.BackingFilename != backing {
		t.Errorf("backing %q, want %q", info.BackingFilename, backing)
	}
	if backing != "" && info.BackingFormat != "qcow2" {
		t.Errorf("backing format %q", info.BackingFormat)
	}
}

// qemuRead checks with qemu-io that [off, off+n) of the image reads as b.
func qemuRead(t *testing.T, path string, b byte, off, n uint64) {
	t.Helper()
	out := testbed.Run(t, "qemu-io", "-r", "-f", "qcow2", "-c", fmt.Sprintf("read -P 0x%02x %d %d", b, off, n), path)
	if strings.Contains(out, "Pattern verification failed") || !strings.Contains(out, "read ") {
		t.Fatalf("read -P 0x%02x %d %d: %s", b, off, n, out)
	}
}

// compareRaw writes a sparse raw file holding want (guest cluster -> byte)
// and runs qemu-img compare against the image.
func compareRaw(t *testing.T, path string, size uint64, want map[uint64]byte) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "want.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	for idx, b := range want {
		if b == 0 {
			continue
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, ClusterSize), int64(idx*ClusterSize)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(size)); err != nil { // drop a partial last cluster's tail
		t.Fatal(err)
	}
	f.Close()
	out := testbed.Run(t, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, path)
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
}

// cluster is a guest cluster an image holds: data, or a zero cluster.
type cluster struct {
	index uint64
	zero  bool
}

// addAll adds the clusters (sorted, unique) to w, runs of adjacent clusters
// of one kind in one call, and returns the host offset of each data cluster.
func addAll(t *testing.T, w *Writer, clusters []cluster) map[uint64]uint64 {
	t.Helper()
	host := map[uint64]uint64{}
	for i := 0; i < len(clusters); {
		j := i + 1
		for j < len(clusters) && clusters[j].zero == clusters[i].zero && clusters[j].index == clusters[j-1].index+1 {
			j++
		}
		first, count := clusters[i].index, uint64(j-i)
		if clusters[i].zero {
			if err := w.AddZero(first, count); err != nil {
				t.Fatal(err)
			}
		}
		for count > 0 && !clusters[i].zero {
			h, n, err := w.Add(first, count)
			if err != nil {
				t.Fatal(err)
			}
			for k := range n {
				host[first+k] = h + k*ClusterSize
			}
			first, count = first+n, count-n
		}
		i = j
	}
	return host
}

// build creates an image with the clusters and writes all data clusters
// listed in write with their pattern.
func build(t *testing.T, path string, size uint64, clusters []cluster, write []uint64, opts Options) *Writer {
	t.Helper()
	w, err := Create(path, size, opts)
	if err != nil {
		t.Fatal(err)
	}
	host := addAll(t, w, clusters)
	for _, idx := range write {
		if _, err := w.WriteAt(pattern(idx), int64(host[idx])); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(st.Size()) != w.HostSize() {
		t.Fatalf("file size %d, want %d", st.Size(), w.HostSize())
	}
	return w
}
