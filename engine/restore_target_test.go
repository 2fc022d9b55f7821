package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/contentsum"
)

// twoBackups writes a folder holding two full backups of a 1 MiB disk
// vda, every byte 0x5a in the first and 0x6b in the latest, and returns
// the first one's image: a qcow2 file larger than the disk, so a size
// check alone would let it be a --disk target of the latest.
func twoBackups(t *testing.T) (dir, img string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "backups")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i, pattern := range []int{0x5a, 0x6b} {
		store, err := chain.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		when := time.Date(2026, 11, 29+i, 1, 0, 0, 0, time.UTC)
		name := "vbackup-" + when.Format("20060102T150405Z")
		pend, err := store.Begin(name)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(pend.Dir(), "vda.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", file, "1M")
		run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%02x 0 1M", pattern), file)
		sum, err := contentsum.File(context.Background(), file, "qcow2", contentsum.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m := chain.Manifest{Time: when, Level: chain.Full, Mode: "pull",
			Domain:     chain.Domain{Name: "vm1", UUID: "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"},
			Checkpoint: chain.Checkpoint{Name: name},
			Disks: []chain.Disk{{Name: "vda", File: "vda.qcow2", Format: "qcow2", Level: chain.Full, Bitmap: true,
				VirtualSize: sum.Size, Checksum: sum.String()}}}
		if _, err := pend.Commit(m); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			img = filepath.Join(dir, name, "vda.qcow2")
		}
	}
	return dir, img
}

func restoreOnto(from, target string) error {
	_, err := Restore(context.Background(), RestoreRequest{From: from, At: "latest", Format: "raw",
		Targets: map[string]string{"vda": target}, Now: time.Now}, nil, &lines{})
	return err
}

// A --disk target that is a file of the backup folder, by whatever path
// (a relative --from, a link to the folder, a hard link to an image), is
// refused by name, and the image is left as it was (restoring the latest
// backup onto the first one's image would overwrite it); a target outside
// the folder is written.
func TestRestoreTargetInBackupFolder(t *testing.T) {
	for _, c := range []struct {
		name string
		// from and target, given the folder, its first image, a link to
		// the folder and a hard link to that image
		paths func(dir, img, link, hard string) (string, string)
	}{
		{"relative --from", func(dir, img, _, _ string) (string, string) { return filepath.Base(dir), img }},
		{"--from a link to the folder", func(_, img, link, _ string) (string, string) { return link, img }},
		{"target through a link to the folder", func(dir, img, link, _ string) (string, string) {
			return dir, filepath.Join(link, filepath.Base(filepath.Dir(img)), filepath.Base(img))
		}},
		{"hard link to the image", func(dir, _, _, hard string) (string, string) { return dir, hard }},
		{"relative --from, hard link", func(dir, _, _, hard string) (string, string) { return filepath.Base(dir), hard }},
	} {
		dir, img := twoBackups(t)
		image, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		other := t.TempDir()
		link, hard := filepath.Join(other, "link"), filepath.Join(other, "vda.raw")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(img, hard); err != nil {
			t.Fatal(err)
		}
		t.Chdir(filepath.Dir(dir))
		from, target := c.paths(dir, img, link, hard)
		err = restoreOnto(from, target)
		if err == nil || !strings.Contains(err.Error(), "--disk vda="+target+" is part of the backup folder "+dir) ||
			!strings.Contains(err.Error(), "nothing was written") {
			t.Errorf("%s: restore onto %s: %v; want it refused as part of the backup folder", c.name, target, err)
		}
		if now, _ := os.ReadFile(img); !bytes.Equal(now, image) {
			t.Errorf("%s: the backup image was written", c.name)
		}
	}

	dir, _ := twoBackups(t)
	out := filepath.Join(t.TempDir(), "out.raw")
	if err := os.WriteFile(out, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(dir))
	if err := restoreOnto(filepath.Base(dir), out); err != nil {
		t.Fatalf("restore onto a file outside the folder: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, bytes.Repeat([]byte{0x6b}, 1<<20)) {
		t.Fatal("the target outside the folder does not hold the latest backup's disk")
	}
}
