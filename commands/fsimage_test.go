package commands

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vbackup/internal/testbed"
)

// The tests of mount, ls, cat and serve put real filesystems, made by
// the tools an admin would use, into a domain's disk and back it up.

// sourceTree writes a folder of files a test later finds in the backup:
// a small text file, 1 MiB of random bytes, a file in a sub-folder.
func sourceTree(t *testing.T, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src-"+tag)
	big := make([]byte, 1<<20)
	rand.Read(big)
	files := map[string][]byte{
		"hello.txt":          []byte("hello from " + tag + "\n"),
		"big.bin":            big,
		"etc/conf/app.conf":  []byte("setting = " + tag + "\n"),
		"etc/conf/empty.txt": nil,
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sameTree fails t unless every regular file under src is under got with
// the same bytes.
func sameTree(t *testing.T, src, got string) {
	t.Helper()
	sameTreeAs(t, src, got, func(rel string) string { return rel })
}

// upperShortNames is where fusefat finds a file: it shows 8.3 names in
// capitals (it ignores the lower-case flags Linux and Windows set).
func upperShortNames(rel string) string {
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		base, ext, _ := strings.Cut(p, ".")
		if len(base) <= 8 && len(ext) <= 3 && !strings.Contains(ext, ".") {
			parts[i] = strings.ToUpper(p)
		}
	}
	return strings.Join(parts, "/")
}

// sameTreeAs is sameTree where the file rel of src is at name(rel).
func sameTreeAs(t *testing.T, src, got string, name func(string) string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, _ := os.ReadFile(p)
		have, err := os.ReadFile(filepath.Join(got, name(rel)))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(want, have) {
			t.Errorf("%s: %d bytes differ from the source's %d", rel, len(have), len(want))
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("comparing %s with %s: %v (%d files)", src, got, err, n)
	}
}

func tool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	return testbed.Run(t, bin, args...)
}

// blankImage makes a sparse file of size bytes.
func blankImage(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func ext4Image(t *testing.T, src, label string, size int64) string {
	t.Helper()
	img := blankImage(t, size)
	tool(t, "mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", src, img)
	return img
}

// xfsImage fills an xfs by mounting it (mkfs.xfs -p takes a proto file,
// not a folder).
func xfsImage(t *testing.T, src, label string, size int64) string {
	t.Helper()
	img := blankImage(t, size)
	tool(t, "mkfs.xfs", "-q", "-f", "-L", label, img)
	mnt := t.TempDir()
	tool(t, "mount", "-o", "loop", img, mnt)
	defer tool(t, "umount", mnt)
	tool(t, "cp", "-a", src+"/.", mnt)
	return img
}

func vfatImage(t *testing.T, src, label string, size int64) string {
	t.Helper()
	img := blankImage(t, size)
	tool(t, "mkfs.vfat", "-n", label, img)
	entries, _ := os.ReadDir(src)
	args := []string{"-i", img, "-s"}
	for _, e := range entries {
		args = append(args, filepath.Join(src, e.Name()))
	}
	tool(t, "mcopy", append(args, "::/")...)
	return img
}

// dirtyExt4Image is an ext4 as a power cut leaves it: its bytes copied
// while it was mounted read-write with files written and synced, so its
// journal holds them and the superblock says needs_recovery.
func dirtyExt4Image(t *testing.T, src string, size int64) string {
	t.Helper()
	live := ext4Image(t, t.TempDir(), "dirty", size)
	mnt := t.TempDir()
	tool(t, "mount", "-o", "loop", live, mnt)
	tool(t, "cp", "-a", src+"/.", mnt)
	tool(t, "sync", "-f", mnt)
	copyImg := filepath.Join(t.TempDir(), "dirty.img")
	tool(t, "cp", "--sparse=always", live, copyImg)
	tool(t, "umount", mnt)
	if out := tool(t, "dumpe2fs", "-h", copyImg); !strings.Contains(out, "needs_recovery") {
		t.Fatalf("the copied ext4 does not need recovery; the test makes no dirty filesystem:\n%s", out)
	}
	return copyImg
}

// partitionedImage lays out a disk of size bytes with sfdisk (label mbr
// or gpt) and writes each filesystem image into its partition, in order;
// each partition is as large as its image.
func partitionedImage(t *testing.T, label string, size int64, fsImages ...string) string {
	t.Helper()
	disk := blankImage(t, size)
	var script strings.Builder
	fmt.Fprintf(&script, "label: %s\n", map[string]string{"mbr": "dos", "gpt": "gpt"}[label])
	for _, img := range fsImages {
		fi, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&script, "size=%dKiB\n", fi.Size()>>10)
	}
	testbed.Need(t, "sfdisk")
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	out := tool(t, "sfdisk", "-d", disk)
	i := 0
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, "start=")
		if !ok {
			continue
		}
		var start int64
		fmt.Sscanf(strings.TrimSpace(rest), "%d", &start)
		tool(t, "dd", "if="+fsImages[i], "of="+disk, "bs=1M", "oflag=seek_bytes", fmt.Sprintf("seek=%d", start*512), "conv=notrunc,sparse", "status=none")
		i++
	}
	if i != len(fsImages) {
		t.Fatalf("sfdisk made %d partitions, want %d:\n%s", i, len(fsImages), out)
	}
	return disk
}

// imageDomain starts a test-bed domain whose disk vda (qcow2, size) holds
// the raw image img.
func imageDomain(t *testing.T, bed *testbed.Bed, img, size string) string {
	t.Helper()
	dom := bed.Domain(t, "vda:qcow2:"+size)
	bed.Virsh(t, "destroy", dom)
	// The fresh qcow2 reads as zeros: only the image's data is written.
	tool(t, "qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O", "qcow2", img, bed.DiskPath(dom, "vda"))
	bed.Virsh(t, "start", dom)
	return dom
}

// liveWrite writes the raw image img over the running domain's disk vda
// from its first byte, through QEMU's own block backend, as a guest would.
func liveWrite(t *testing.T, bed *testbed.Bed, dom, img string) {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(bed.Folder(t), "disk.img")
	tool(t, "cp", img, dst)
	tool(t, "chmod", "0644", dst)
	out := bed.Virsh(t, "qemu-monitor-command", dom, "--hmp",
		fmt.Sprintf(`qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -s %s 0 %d"`, dst, fi.Size()))
	if strings.TrimSpace(out) != "" {
		t.Fatalf("qemu-io: %s", out)
	}
}
