package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vbackup/chain"
	"vbackup/progress"
	"vbackup/virt"
)

// pushing makes the fake's push jobs write real qcow2 images, each with
// content of its own (64 KiB of a pattern at an offset that moves), so
// that every backup's checksum differs and verify has something to check.
func pushing(t *testing.T, b bed) {
	t.Helper()
	var n atomic.Int64
	b.dom.OnPushComplete(func(disk, target string) error {
		if err := writeQcow2(target); err != nil {
			return err
		}
		i := n.Add(1)
		cmd := fmt.Sprintf("write -P %d %d 64k", i%250+1, (i%16)*64<<10)
		if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, target).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-io: %v: %s", err, out)
		}
		return nil
	})
}

// backupInto makes one push backup of the bed's domain into dir, as if
// the clock said now.
func backupInto(t *testing.T, b bed, dir string, now time.Time) *chain.Backup {
	t.Helper()
	req := b.request(t)
	req.Dir, req.Push, req.Now = dir, true, func() time.Time { return now }
	return runBackup(t, b, req)
}

// runBackup prepares and runs the backup req asks for.
func runBackup(t *testing.T, b bed, req BackupRequest) *chain.Backup {
	t.Helper()
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		t.Fatalf("backup into %s: %v", req.Dir, err)
	}
	defer p.Close()
	done, err := p.Run(context.Background(), progress.NewQuiet(), never)
	if err != nil {
		t.Fatalf("backup into %s: %v\n%s", req.Dir, err, b.notes.all())
	}
	return done
}

func verifiesAll(t *testing.T, dir string) {
	t.Helper()
	store, err := OpenFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(context.Background(), store, "all", func(c Checked) error {
		if c.Status != "ok" {
			t.Errorf("verify %s: %s %s: %s %s %s", dir, c.Backup, c.Disk, c.Status, c.Found, c.Detail)
		}
		return nil
	})
	if err != nil {
		t.Errorf("verify %s: %v", dir, err)
	}
	if v.Backups != len(store.Backups) {
		t.Errorf("verify %s checked %d backups of %d", dir, v.Backups, len(store.Backups))
	}
}

// The collision: two folders of one domain backed up within the
// same second, at different times (the local folder's checkpoint of that
// second already pruned from libvirt when the offsite one is made). Each
// folder's next backup builds on its own last, and neither folder's
// checkpoint pruning deletes the other's checkpoint.
func TestTwoFoldersSameSecond(t *testing.T) {
	b := newBed(t)
	pushing(t, b)
	local, offsite := filepath.Join(t.TempDir(), "local"), filepath.Join(t.TempDir(), "offsite")
	t0 := time.Date(2026, 12, 4, 1, 0, 0, 0, time.UTC)
	second := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

	l1 := backupInto(t, b, local, second(0))
	l2 := backupInto(t, b, local, second(1))
	o1 := backupInto(t, b, offsite, second(0))
	if l1.Folder == "" || o1.Folder == "" || l1.Folder == o1.Folder || l1.Folder != l2.Folder {
		t.Fatalf("folder identities %q, %q and %q; want one for each folder", l1.Folder, l2.Folder, o1.Folder)
	}
	if l1.Name() == o1.Name() {
		t.Fatalf("both folders named their checkpoint %s", l1.Name())
	}
	for _, bk := range []*chain.Backup{l1, o1} {
		if !strings.HasPrefix(bk.Name(), "vbackup-20261204T010000Z-"+bk.Folder) {
			t.Errorf("backup %s: its name does not carry its time and folder %s", bk.Name(), bk.Folder)
		}
	}
	cp, err := b.dom.Checkpoint(context.Background(), o1.Name())
	if err != nil || folderMark(cp.Description) != o1.Folder {
		t.Errorf("checkpoint %s: %+v, %v; want its description to mark folder %s", o1.Name(), cp, err, o1.Folder)
	}

	l3 := backupInto(t, b, local, second(2))
	if got := checkpoints(t, b.dom); !slices.Contains(got, o1.Name()) || slices.Contains(got, l2.Name()) {
		t.Errorf("after the local folder's third backup, libvirt has %v; want %s (the offsite's) kept and %s (pruned) gone", got, o1.Name(), l2.Name())
	}
	o2 := backupInto(t, b, offsite, second(3))
	for _, c := range []struct{ next, last *chain.Backup }{{l2, l1}, {l3, l2}, {o2, o1}} {
		d, _ := c.next.Disk("vda")
		if c.next.Level != chain.Incremental || d.Level != chain.Incremental || d.Backing != c.last.Name() {
			t.Errorf("backup %s: level %s, vda %s on %q; want an incremental on %s", c.next.Name(), c.next.Level, d.Level, d.Backing, c.last.Name())
		}
	}
	if got := checkpoints(t, b.dom); len(got) != 2 || !slices.Contains(got, l3.Name()) || !slices.Contains(got, o2.Name()) {
		t.Errorf("libvirt's checkpoints %v; want each folder's newest, %s and %s", got, l3.Name(), o2.Name())
	}
	verifiesAll(t, local)
	verifiesAll(t, offsite)
}

// A checkpoint in libvirt of the name a folder's last backup made, that is
// not the one it made, is never built on or deleted: the backup is a full
// one and says why; --level inc is refused with the same reason.
func TestForeignCheckpointOfTheSameName(t *testing.T) {
	for _, c := range []struct {
		name, why string
		replace   func(t *testing.T, b bed, last *chain.Backup)
	}{
		{"another folder's", "belongs to another backup folder (vbackup backup into /elsewhere (folder 0badf00d))", func(t *testing.T, b bed, last *chain.Backup) {
			create(t, b, fmt.Sprintf(`<domaincheckpoint><name>%s</name><description>vbackup backup into /elsewhere (folder 0badf00d)</description>%s</domaincheckpoint>`, last.Name(), vdaOnly))
		}},
		{"made by hand", "was not made by vbackup for this folder", func(t *testing.T, b bed, last *chain.Backup) {
			create(t, b, fmt.Sprintf(`<domaincheckpoint><name>%s</name>%s</domaincheckpoint>`, last.Name(), vdaOnly))
		}},
		{"made at another time", "it is another checkpoint of the same name", func(t *testing.T, b bed, last *chain.Backup) {
			created, _ := createdAt(last.Checkpoint.XML)
			doc := strings.Replace(last.Checkpoint.XML, fmt.Sprintf("<creationTime>%d<", created.Unix()), fmt.Sprintf("<creationTime>%d<", created.Unix()-3600), 1)
			if _, err := b.dom.CreateCheckpoint(context.Background(), doc, virt.CreateFlags{Redefine: true}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBed(t)
			pushing(t, b)
			first := backupInto(t, b, b.dir, time.Now())
			if err := b.dom.DeleteCheckpoint(context.Background(), first.Name(), virt.DeleteFlags{}); err != nil {
				t.Fatal(err)
			}
			c.replace(t, b, first)

			req := b.request(t)
			req.Level = chain.WantInc
			if p, err := PrepareBackup(context.Background(), b.dom, req, b.notes); err == nil {
				p.Close()
				t.Errorf("--level inc was prepared as %s; want a refusal saying %q", p.Decision().Level, c.why)
			} else if !strings.Contains(err.Error(), c.why) {
				t.Errorf("--level inc: %v; want a refusal saying %q", err, c.why)
			}
			next := backupInto(t, b, b.dir, time.Now().Add(time.Second))
			if next.Level != chain.Full {
				t.Errorf("the next backup is %s; want a full one", next.Level)
			}
			if !strings.Contains(b.notes.all(), c.why) {
				t.Errorf("the full backup does not say why (%q):\n%s", c.why, b.notes.all())
			}
			if got := checkpoints(t, b.dom); !slices.Contains(got, first.Name()) {
				t.Errorf("the foreign checkpoint %s was deleted: libvirt has %v", first.Name(), got)
			}
			verifiesAll(t, b.dir)
		})
	}
}

func create(t *testing.T, b bed, doc string) {
	t.Helper()
	if _, err := b.dom.CreateCheckpoint(context.Background(), doc, virt.CreateFlags{}); err != nil {
		t.Fatal(err)
	}
}

// A folder written before folders had an identity keeps building on its
// checkpoint, judged by its creation time, and from then on records one.
func TestFolderWithoutIdentity(t *testing.T) {
	b := newBed(t)
	pushing(t, b)
	first := backupInto(t, b, b.dir, time.Now())
	legacy(t, first)
	next := backupInto(t, b, b.dir, time.Now().Add(time.Second))
	if next.Level != chain.Incremental || next.Folder == "" {
		t.Errorf("the backup after one without a folder identity: %s, folder %q; want an incremental that records one", next.Level, next.Folder)
	}
	verifiesAll(t, b.dir)
}

// legacy makes bk's manifest one of a vbackup that had no folder identity.
func legacy(t *testing.T, bk *chain.Backup) {
	t.Helper()
	path := filepath.Join(bk.Dir, chain.ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "folder")
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

const vdaOnly = `<disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='no'/></disks>`

// The name an unfinished backup left in the folder is not given again,
// even within the same second: its checkpoint's bitmaps may have survived
// in the images (a shut-off backup killed after adding them, the domain
// started since), and a checkpoint of the same name would fail on them.
func TestBackupSkipsTheNameOfALeftover(t *testing.T) {
	b := newBed(t)
	pushing(t, b)
	at := time.Date(2026, 12, 4, 14, 45, 37, 0, time.UTC)
	backupInto(t, b, b.dir, at)
	req := b.request(t)
	req.Push, req.Now = true, func() time.Time { return at.Add(time.Second) }
	p, err := PrepareBackup(context.Background(), b.dom, req, b.notes)
	if err != nil {
		t.Fatal(err)
	}
	left := p.Name()
	p.Close()
	if err := os.Mkdir(filepath.Join(b.dir, "."+left+".partial"), 0o700); err != nil {
		t.Fatal(err)
	}
	done := runBackup(t, b, req)
	if done.Name() == left {
		t.Errorf("the backup is named %s, as the unfinished one left in the folder", left)
	}
	if !strings.Contains(b.notes.all(), "removed the unfinished backup "+left) {
		t.Errorf("the leftover was not removed:\n%s", b.notes.all())
	}
}
