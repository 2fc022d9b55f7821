package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"vbackup/chain"
	"vbackup/contentsum"
)

// The records of an incremental keep exactly the chunks that meet a
// changed range, with their index.
func TestChangedRecords(t *testing.T) {
	var all []byte
	for i := 0; i < 6; i++ {
		all = append(all, bytes.Repeat([]byte{byte(i + 1)}, digestSize)...)
	}
	const mib = contentsum.ChunkSize
	got := recordsOf(all, []contentsum.Range{{Off: mib + 5, Len: 10}, {Off: 3*mib - 1, Len: 2}, {Off: 5 * mib, Len: mib}})
	var idx []uint64
	for r := got; len(r) > 0; r = r[recordSize:] {
		i := binary.BigEndian.Uint64(r)
		idx = append(idx, i)
		if !bytes.Equal(r[8:recordSize], all[i*digestSize:(i+1)*digestSize]) {
			t.Errorf("record %d holds another chunk's digest", i)
		}
	}
	if want := []uint64{1, 2, 3, 5}; len(idx) != len(want) || idx[0] != 1 || idx[1] != 2 || idx[2] != 3 || idx[3] != 5 {
		t.Errorf("records of chunks %v, want %v", idx, want)
	}
}

// addDigests gives every backup of dir the digest files vbackup writes: a
// full every chunk's, an incremental its changed chunks'.
func addDigests(t *testing.T, dir string) {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range store.Backups {
		m := b.Manifest
		m.Disks = append([]chain.Disk(nil), m.Disks...)
		d := &m.Disks[0]
		all := imageDigests(t, b.File(*d))
		name, data := allDigestsFile(d.Name), all
		if d.Level == chain.Incremental {
			changed, _, err := topLayer(context.Background(), b.File(*d))
			if err != nil {
				t.Fatal(err)
			}
			name, data = changedDigestsFile(d.Name), recordsOf(all, changed)
			d.DigestsChanged = true
		}
		d.Digests = name
		if err := writeDigests(b.Dir, name, data); err != nil {
			t.Fatal(err)
		}
		if err := store.Rewrite(b, m); err != nil {
			t.Fatal(err)
		}
	}
}

// imageDigests is every chunk digest of an image, read from its data.
func imageDigests(t *testing.T, image string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := contentsum.File(context.Background(), image, "qcow2", contentsum.Options{Digests: &buf}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkDigests fails unless every listed backup's digests, laid from its
// chain's files, are those of its data.
func checkDigests(t *testing.T, dir string) {
	t.Helper()
	store, err := chain.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range store.Backups {
		d := b.Disks[0]
		got, err := digestsAt(store, b, d.Name)
		if err != nil {
			t.Errorf("backup %s: digests %v", b.Name(), err)
			continue
		}
		if !bytes.Equal(got, imageDigests(t, b.File(d))) {
			t.Errorf("backup %s: the digests laid from its chain are not those of its data", b.Name())
		}
	}
}

// An incremental's file holds its changed chunks only, the chain's files
// together give every point's digests, and prune's merges keep them true.
func TestDigestsFollowTheChange(t *testing.T) {
	dir, names := makeChain(t, []point{{day: "2026-10-28", off: 0, size: 16}, {day: "2026-10-29", off: 8, size: 8}, {day: "2026-10-31", off: 20, size: 4},
		{day: "2026-11-01", off: 4, size: 4}, {day: "2026-11-02", off: 30, size: 2}})
	addDigests(t, dir)
	checkDigests(t, dir)
	store, _ := chain.Open(dir)
	last := store.Backups[len(store.Backups)-1]
	if fi := storedBytes(last.File(chain.Disk{File: changedDigestsFile("vda")})); fi > 4096 {
		t.Errorf("the last incremental's digests take %d bytes for 2 MiB changed", fi)
	}
	// Down (the oldest full twice), then up (a middle point).
	prune(t, dir, Policy{Last: 3})
	checkDigests(t, dir)
	prune(t, dir, Policy{Monthly: 2})
	checkDigests(t, dir)
	store, _ = chain.Open(dir)
	if len(store.Backups) != 2 || store.Backups[1].Name() != names[4] {
		t.Fatalf("kept %d backups", len(store.Backups))
	}
	if d := store.Backups[1].Disks[0]; !d.DigestsChanged {
		t.Errorf("the newest's digests became every chunk's: %+v", d)
	}
}
