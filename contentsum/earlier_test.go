package contentsum

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// An overlay's checksum from the base's chunk digests and what the overlay
// changed equals the full one, and reads only the changed chunks.
func TestEarlier(t *testing.T) {
	testbed.Need(t, "qemu-nbd", "qemu-io")
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, fmt.Sprint(chainSize))
	qemuIO(t, base, "write -P 0x11 0 2M", "write -P 0x22 3M 1M", "write -P 0x55 5M 1M")
	var digests bytes.Buffer
	full, err := File(testCtx(t), base, "qcow2", Options{Digests: &digests})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OfDigests(bytes.NewReader(digests.Bytes()), chainSize); err != nil || !got.Equal(full) {
		t.Fatalf("OfDigests of what File wrote = %v, %v; want %v", got, err, full)
	}
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	// Data over data, zeroes over data, data in the partial last chunk.
	qemuIO(t, top, "write -P 0x33 1536K 64K", "write -z 5M 1M", fmt.Sprintf("write -P 0x44 %d 512", chainSize-512))
	changed := []Range{{1536 << 10, 64 << 10}, {5 * mib, mib}, {chainSize - 512, 512}}

	want := reference(t, top, "qcow2")
	earlier := &Earlier{Digests: bytes.NewReader(digests.Bytes()), Size: chainSize, Changed: changed}
	var newDigests bytes.Buffer
	got, read, err := export(testCtx(t), serve(t, top, "qcow2"), top, Options{Earlier: earlier, Digests: &newDigests})
	if err != nil || !got.Equal(want) {
		t.Fatalf("with the earlier digests: %v, %v; want %v", got, err, want)
	}
	// Chunk 1 (all data) and the data of the last one (512 bytes) are read;
	// chunk 5 reads as zeroes now and costs nothing.
	if read != mib+512 {
		t.Errorf("read %d bytes, want %d: only the changed chunks", read, mib+512)
	}
	if again, err := OfDigests(bytes.NewReader(newDigests.Bytes()), chainSize); err != nil || !again.Equal(want) {
		t.Errorf("the new digests sum to %v, %v; want %v", again, err, want)
	}
	// The digests are really reused: leaving a change out misses it.
	partial := &Earlier{Digests: bytes.NewReader(digests.Bytes()), Size: chainSize, Changed: changed[1:]}
	if got, err := File(testCtx(t), top, "qcow2", Options{Earlier: partial}); err != nil || got.Equal(want) {
		t.Errorf("with a change left out: %v, %v; want another sum than %v", got, err, want)
	}
	// Another size: the earlier state does not apply, everything is read.
	other := &Earlier{Digests: bytes.NewReader(digests.Bytes()), Size: chainSize + mib, Changed: nil}
	if got, err := File(testCtx(t), top, "qcow2", Options{Earlier: other}); err != nil || !got.Equal(want) {
		t.Errorf("an earlier state of another size: %v, %v; want %v", got, err, want)
	}
	// A digest file too short for the size is an error, not a sum.
	if _, err := OfDigests(bytes.NewReader(digests.Bytes()[:64]), chainSize); err == nil || !strings.Contains(err.Error(), "chunk digests") {
		t.Errorf("OfDigests of a short file: %v", err)
	}
	if _, err := OfDigests(bytes.NewReader(append(digests.Bytes(), 0)), chainSize); err == nil {
		t.Errorf("OfDigests of a long file succeeded")
	}
}
