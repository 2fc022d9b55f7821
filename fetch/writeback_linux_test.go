package fetch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident reports, per page of the file at path, whether it is in the
// page cache (what fincore(1) shows).
func resident(t *testing.T, path string) []bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

// A fetched file does not stay in the page cache: all but the last
// evictAfter writes are dropped from it as the copy goes, and the file
// holds what was written. With KeepCache (a checksum pass follows) the
// pages stay. The folder is on the disk the repository is on, not a tmpfs
// (whose pages cannot be dropped).
func TestWriteBehindEvicts(t *testing.T) {
	dir, err := os.MkdirTemp(".", ".writeback-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Fatalf("%s is on a tmpfs: the test needs a disk", dir)
	}

	const chunk, writes = 256 << 10, 4 * evictAfter
	want := make([]byte, chunk*writes)
	for i := range want {
		want[i] = byte(i*7 + i>>12)
	}
	for _, evict := range []bool{true, false} {
		path := filepath.Join(dir, fmt.Sprintf("disk-%v.raw", evict))
		dst, err := createTarget(path, Disk{Format: "raw"}, chunk*writes, evict)
		if err != nil {
			t.Fatal(err)
		}
		for i := range writes {
			if _, err := dst.WriteAt(want[i*chunk:(i+1)*chunk], int64(i*chunk)); err != nil {
				t.Fatal(err)
			}
		}
		if err := dst.finish(); err != nil {
			t.Fatal(err)
		}

		pages := resident(t, path)
		evicted := pages[:(writes-evictAfter)*chunk/os.Getpagesize()]
		cached := 0
		for _, r := range evicted {
			if r {
				cached++
			}
		}
		// A page may come back through readahead or another reader, or
		// leave under memory pressure: nearly all must be as expected.
		switch {
		case evict && cached > len(evicted)/20:
			t.Errorf("evicting: %d of the %d pages of the evicted writes are still in the page cache", cached, len(evicted))
		case !evict && cached < len(evicted)*19/20:
			t.Errorf("keeping the cache: only %d of %d pages are in the page cache", cached, len(evicted))
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("evict %v: the file does not hold what was written", evict)
		}
	}
}
