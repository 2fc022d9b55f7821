package virttest

import (
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// instantRules asserts the calls of an instant restore: Boot, and the block
// pull that --finish runs and may cancel.
func instantRules(t *testing.T, fresh func(t *testing.T) Subject) {
	t.Run("BootRunning", func(t *testing.T) {
		s := fresh(t)
		err := domain(t, s).Boot(bg)
		if testDriver(s) { // an internal error there
			wantErr(t, "Boot of a running domain", err, nil, "already running")
			return
		}
		wantErr(t, "Boot of a running domain", err, virt.ErrOperationInvalid, "domain is already running")
	})

	t.Run("BlockPull", func(t *testing.T) {
		s := fresh(t)
		dom := domain(t, s)
		err := dom.BlockPull(bg, "vda")
		if s.Folder == nil {
			wantErr(t, "BlockPull on the test driver", err, virt.ErrUnsupported)
			return
		}
		if err != nil {
			t.Fatalf("BlockPull(vda): %v", err)
		}
		// A disk without a backing file has nothing to pull: the job ends
		// at once on QEMU; whatever runs meanwhile says it is a pull.
		deadline := time.Now().Add(30 * time.Second)
		for {
			bj, ok, err := dom.BlockJob(bg, "vda")
			if err != nil {
				t.Fatalf("BlockJob(vda) during a pull: %v", err)
			}
			if !ok {
				break
			}
			if !bj.Pull || bj.Backup {
				t.Fatalf("BlockJob(vda) during a pull = %+v; want Pull", bj)
			}
			if time.Now().After(deadline) {
				t.Fatal("the pull of a disk with no backing file did not end in 30 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		doc, err := dom.XML(bg, false)
		if err != nil {
			t.Fatal(err)
		}
		var def libvirtxml.Domain
		if err := def.Unmarshal(doc); err != nil {
			t.Fatal(err)
		}
		if files := virt.BackingFiles(&def, "vda"); len(files) > 0 {
			t.Errorf("disk vda still reads from %v after the pull", files)
		}
		wantErr(t, "BlockJobAbort with no job", dom.BlockJobAbort(bg, "vda"), virt.ErrInvalidArg, "vda", "does not have an active block job")
		wantErr(t, "BlockPull(vdz)", dom.BlockPull(bg, "vdz"), virt.ErrInvalidArg, "'vdz' not found")
	})

	t.Run("BlockPullShutOff", func(t *testing.T) {
		s := fresh(t)
		if s.Folder == nil {
			return
		}
		off := definedCopy(t, s, domain(t, s))
		err := off.BlockPull(bg, "vda")
		wantErr(t, "BlockPull on a shut-off domain", err, virt.ErrOperationInvalid, "domain is not running")
		if err != nil && strings.Contains(err.Error(), "virError") {
			t.Errorf("error leaks the binding's frame: %v", err)
		}
	})
}
