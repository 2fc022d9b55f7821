package qcow2

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompressedErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(filepath.Join(dir, "x.qcow2"), 1<<20, Options{Compression: "lz4"}); err == nil || !strings.Contains(err.Error(), "zlib or zstd") {
		t.Errorf("Create with compression lz4: %v", err)
	}
	plain, err := Create(filepath.Join(dir, "p.qcow2"), 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Abort()
	if _, err := plain.AddData(0, 1); err == nil {
		t.Error("AddData on a plain image succeeded")
	}
	if err := plain.WriteClusters(0, make([]byte, ClusterSize)); err == nil {
		t.Error("WriteClusters on a plain image succeeded")
	}

	const size = 10*ClusterSize + 1024
	w, err := Create(filepath.Join(dir, "c.qcow2"), size, Options{Compression: "zstd"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if _, _, err := w.Add(0, 1); err == nil {
		t.Error("Add on a compressed image succeeded")
	}
	if n, err := w.AddData(0, 3); err != nil || n != 3 {
		t.Fatalf("AddData: %d, %v", n, err)
	}
	if _, err := w.WriteAt(make([]byte, 512), int64(3*ClusterSize)); err == nil {
		t.Error("WriteAt on a compressed image succeeded")
	}
	if err := w.AddZero(3, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddData(10, 1); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		index uint64
		n     int
	}{{0, 100}, {0, 0}, {0, ClusterSize + 1}, {5, ClusterSize}, {3, ClusterSize}, {10, 1025}, {11, 1024}, {9, ClusterSize + 1024}} {
		if err := w.WriteClusters(bad.index, make([]byte, bad.n)); err == nil {
			t.Errorf("WriteClusters(%d, %d bytes) succeeded", bad.index, bad.n)
		}
	}
	if err := w.WriteClusters(0, content(text, 0)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteClusters(0, content(text, 0)); err == nil {
		t.Error("a cluster written twice")
	}
	if err := w.WriteClusters(10, content(text, 10)[:1024]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "2 data clusters added were never written") {
		t.Errorf("Close with clusters 1 and 2 not written: %v", err)
	}
}

// fakeCodec "compresses" every cluster to size bytes of junk, or to
// nothing (stored as it is) every plainEvery-th call: a file of
// gigabytes laid out at no cost in CPU, for qemu-img check, which reads
// no data.
type fakeCodec struct {
	size, plainEvery int
	calls            *int
}

var junk = bytes.Repeat([]byte{0xa5}, ClusterSize)

func (fakeCodec) kind() byte { return compressionZstd }

func (f fakeCodec) compress(dst, _ []byte, _ int) []byte {
	*f.calls++
	if f.size == 0 || *f.calls%f.plainEvery == 0 {
		return nil
	}
	return append(dst, junk[:f.size]...)
}

// More than 2 GiB of file: a second refcount block, started as the data
// crosses into its group, and the table at the end reaching into a group
// of its own.
func TestCompressedRefcountGroups(t *testing.T) {
	needQemu(t)
	data := pattern(3)
	for _, tc := range []struct {
		name       string
		size       int // compressed size, 0: all stored as they are
		plainEvery int
		clusters   func(w *Writer) uint64 // how many to add, given the writer after Create
		wantGroups uint64
		wantLast   uint64 // the host cluster where the last refcount block goes
	}{
		// 41667 of 50000 clusters compressed to 40000 bytes: 25400 host
		// clusters, and 8333 stored as they are, spread over 7 regions.
		{"crossing", 40000, 6, func(*Writer) uint64 { return 50000 }, 2, refcountEntries},
		// Stored as they are, data and L2 tables end exactly at the end of
		// the first group: the refcount table starts the second.
		{"table-in-new-group", 0, 1, func(w *Writer) uint64 {
			free := refcountEntries - w.next
			return free - ceilDiv(free, l2Entries+1)
		}, 2, refcountEntries + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "g.qcow2")
			w, err := Create(p, 4<<30, Options{Compression: "zstd"})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			w.c.codec = fakeCodec{tc.size, tc.plainEvery, &calls}
			n := tc.clusters(w)
			for i := uint64(0); i < n; {
				got, err := w.AddData(i, n-i)
				if err != nil {
					t.Fatal(err)
				}
				for j := i; j < i+got; j++ {
					if err := w.WriteClusters(j, data); err != nil {
						t.Fatal(err)
					}
				}
				i += got
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w.rbCount != tc.wantGroups || w.c.blocks[len(w.c.blocks)-1] != tc.wantLast*ClusterSize {
				t.Errorf("refcount blocks %d, the last at %d; want %d at cluster %d", w.rbCount, w.c.blocks[len(w.c.blocks)-1], tc.wantGroups, tc.wantLast)
			}
			r := qemuCheck(t, p)
			wantCompressed := 0
			if tc.size > 0 {
				wantCompressed = int(n - n/uint64(tc.plainEvery))
			}
			if r.CompressedClusters != wantCompressed || r.AllocatedClusters != int(n) {
				t.Errorf("qemu-img check: %d compressed of %d allocated, want %d of %d", r.CompressedClusters, r.AllocatedClusters, wantCompressed, n)
			}
			if tc.size == 0 {
				qemuRead(t, p, patByte(3), (n-1)*ClusterSize, ClusterSize)
			}
		})
	}
}
