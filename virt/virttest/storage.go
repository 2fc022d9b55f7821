package virttest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"vbackup/virt"
)

// sparseFile is a local file of 4 MiB and 8 KiB: 64 KiB of data at 1 MiB,
// 4 KiB at 3 MiB, and a hole to its end, which an upload must keep.
func sparseFile(t *testing.T) (string, []byte) {
	t.Helper()
	want := make([]byte, 4<<20+8<<10)
	copy(want[1<<20:], bytes.Repeat([]byte{0xab}, 64<<10))
	copy(want[3<<20:], bytes.Repeat([]byte{0x5c}, 4<<10))
	path := filepath.Join(t.TempDir(), "image")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{1 << 20, 3 << 20} {
		n := int64(64 << 10)
		if off == 3<<20 {
			n = 4 << 10
		}
		if _, err := f.WriteAt(want[off:off+n], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	return path, want
}

// storageRules: pools listed with their state; a volume uploaded holds the
// file's bytes, holes and trailing hole included; a name taken, a pool
// missing or not started are refused as libvirt refuses them, and change
// nothing.
func storageRules(t *testing.T, fresh func(t *testing.T) Subject) {
	ctx := context.Background()

	t.Run("StoragePoolsListed", func(t *testing.T) {
		s := fresh(t)
		if s.Pool == nil { // the test driver's node file defines none
			if pools, err := s.Conn.StoragePools(ctx); err != nil || len(pools) != 0 {
				t.Fatalf("StoragePools = %+v, %v; want none", pools, err)
			}
			return
		}
		on, off := s.Pool(t, true), s.Pool(t, false)
		pools, err := s.Conn.StoragePools(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pools, virt.StoragePool{Name: on, Active: true}) || !slices.Contains(pools, virt.StoragePool{Name: off}) {
			t.Fatalf("StoragePools = %+v; want %s active and %s not", pools, on, off)
		}
		if !slices.IsSortedFunc(pools, func(a, b virt.StoragePool) int { return compare(a.Name, b.Name) }) {
			t.Errorf("StoragePools not sorted by name: %+v", pools)
		}
	})

	t.Run("UploadVolume", func(t *testing.T) {
		s := fresh(t)
		if s.Pool == nil {
			return // no pool to upload into: PoolRefusals holds what it says
		}
		pool := s.Pool(t, true)
		file, want := sparseFile(t)
		var told uint64 // the pace is told of the data, not of the holes
		paced := func(_ context.Context, n uint64) error { told += n; return nil }
		path, err := s.Conn.UploadVolume(ctx, pool, "restored-vda.qcow2", file, paced)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the volume at %s (%d bytes, %v) differs from the file uploaded (%d bytes)", path, len(got), err, len(want))
		}
		if told != 68<<10 {
			t.Errorf("the pace was told of %d bytes; the file holds 68 KiB of data", told)
		}
		// A pace that fails ends the upload with its error, and no volume
		// is left.
		stop := errors.New("stopped")
		_, err = s.Conn.UploadVolume(ctx, pool, "stopped.qcow2", file, func(context.Context, uint64) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("an upload whose pace failed = %v, want its error", err)
		}
		if vols, _ := s.Conn.StorageVolumes(ctx, pool); slices.Contains(vols, "stopped.qcow2") {
			t.Errorf("the stopped upload left its volume: %v", vols)
		}
		if vols, err := s.Conn.StorageVolumes(ctx, pool); err != nil || !slices.Contains(vols, "restored-vda.qcow2") {
			t.Fatalf("StorageVolumes = %v, %v; want the volume listed", vols, err)
		}
		// The name taken: refused, and the volume keeps its bytes.
		other := filepath.Join(t.TempDir(), "other")
		os.WriteFile(other, []byte("other"), 0o644)
		_, err = s.Conn.UploadVolume(ctx, pool, "restored-vda.qcow2", other, nil)
		wantErr(t, "UploadVolume over a volume", err, virt.ErrVolumeExists, "storage volume 'restored-vda.qcow2' exists already")
		if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
			t.Fatal("a refused upload changed the volume")
		}
		if err := s.Conn.DeleteVolume(ctx, pool, "restored-vda.qcow2"); err != nil {
			t.Fatal(err)
		}
		if vols, err := s.Conn.StorageVolumes(ctx, pool); err != nil || len(vols) != 0 {
			t.Errorf("after DeleteVolume: %v, %v", vols, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the deleted volume's file: %v", err)
		}
	})

	t.Run("PoolRefusals", func(t *testing.T) {
		s := fresh(t)
		file, _ := sparseFile(t)
		_, err := s.Conn.StorageVolumes(ctx, "no-such-pool")
		wantErr(t, "StorageVolumes(no-such-pool)", err, virt.ErrNoPool, "no storage pool with matching name 'no-such-pool'")
		_, err = s.Conn.UploadVolume(ctx, "no-such-pool", "v", file, nil)
		wantErr(t, "UploadVolume(no-such-pool)", err, virt.ErrNoPool, "no storage pool with matching name 'no-such-pool'")
		if s.Pool == nil {
			return
		}
		off := s.Pool(t, false)
		_, err = s.Conn.UploadVolume(ctx, off, "v", file, nil)
		wantErr(t, "UploadVolume into a pool not started", err, virt.ErrOperationInvalid, "storage pool '"+off+"' is not active")
	})
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
