package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"libvirt.org/go/libvirtxml"

	"vbackup/chain"
	"vbackup/virt"
)

// decide picks the level of every disk and names the backup.
func (b *Backup) decide(ctx context.Context) error {
	disks, err := b.disks(ctx)
	if err != nil {
		return err
	}
	if b.folder, err = folderIdentity(b.store); err != nil {
		return err
	}
	last := b.store.Last()
	ok, why := false, ""
	if last != nil && b.req.Level != chain.WantFull {
		if ok, why, err = b.usable(ctx, last); err != nil {
			return err
		}
	}
	b.diskInfo = disks
	want := b.req.Level
	long := b.req.MaxChain > 0 && want == chain.WantAuto && incrementals(b.store) >= b.req.MaxChain
	if long {
		want = chain.WantFull
	}
	if b.dec, err = chain.Decide(want, b.dom.Name(), last, ok, why, disks); err != nil {
		return err
	}
	if long {
		n, s := incrementals(b.store), "s"
		if n == 1 {
			s = ""
		}
		b.dec.Reason = fmt.Sprintf("%d incremental%s since the last full backup, as many as --max-chain %d allows", n, s, b.req.MaxChain)
	}
	if b.offline {
		if err := b.decideOffline(ctx); err != nil {
			return err
		}
	}
	b.name, err = b.checkpointName(ctx)
	return err
}

// disks lists the disks to back up: every writable disk with a medium (not a
// CD-ROM), or those the request names.
func (b *Backup) disks(ctx context.Context) ([]chain.DiskInfo, error) {
	all, err := b.dom.Disks(ctx)
	if err != nil {
		return nil, fmt.Errorf("domain %q: %w", b.dom.Name(), err)
	}
	b.domainDisks = all
	names := make([]string, len(all))
	for i, d := range all {
		names[i] = d.Target
	}
	if err := virt.CheckDiskNames(fmt.Sprintf("domain %q", b.dom.Name()), names, b.req.Disks); err != nil {
		return nil, err
	}
	var out []chain.DiskInfo
	for _, d := range all {
		named := len(b.req.Disks) > 0 && virt.Wanted(b.req.Disks, d.Target)
		switch {
		case !virt.Wanted(b.req.Disks, d.Target):
			continue
		case named && (d.Empty() || d.ReadOnly):
			return nil, fmt.Errorf("--disk %s: the disk is empty or read-only: there is nothing of it to back up; leave it out", d.Target)
		case d.Empty() || d.ReadOnly || d.Device == "cdrom":
			continue
		}
		info := chain.DiskInfo{Name: d.Target, CanBitmap: d.CanCarryBitmap()}
		if !info.CanBitmap {
			info.Why = fmt.Sprintf("a %s disk", d.Format)
		}
		out = append(out, info)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("domain %q has no disk to back up: every disk is empty, read-only or a CD-ROM", b.dom.Name())
	}
	return out, nil
}

// checkpointName is vbackup-<UTC time>-<folder id>, made unique in
// libvirt and the folder.
func (b *Backup) checkpointName(ctx context.Context) (string, error) {
	base := checkpointBase(b.req.Now(), b.folder)
	for i := 1; i < 100; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		_, err := b.dom.Checkpoint(ctx, name)
		if errors.Is(err, virt.ErrNoCheckpoint) {
			if _, ferr := b.store.Find(name); ferr != nil && !b.store.Taken(name) {
				return name, nil
			}
			continue
		}
		if err != nil {
			return "", virt.CheckpointErr(ctx, b.dom, "", err)
		}
	}
	return "", fmt.Errorf("no free checkpoint name after %s", base)
}

// usable reports whether the last backup's checkpoint can be built on. One
// libvirt no longer has (the domain was re-created, or moved to another
// host) is redefined from the XML kept in the folder, with libvirt checking
// that the disks still hold its bitmaps; otherwise it would claim changes
// it never tracked.
func (b *Backup) usable(ctx context.Context, last *chain.Backup) (bool, string, error) {
	if b.offline {
		return b.usableOffline(ctx, last)
	}
	cp, err := b.dom.Checkpoint(ctx, last.Name())
	if err == nil {
		// Never built on when it is not the one this folder made.
		if why := notOwn(cp, last); why != "" {
			return false, why, nil
		}
		return true, "", nil
	}
	if !errors.Is(err, virt.ErrNoCheckpoint) {
		return false, "", virt.CheckpointErr(ctx, b.dom, last.Name(), err)
	}
	if b.req.DryRun {
		b.would = append(b.would, fmt.Sprintf("libvirt has no checkpoint %s: it would be redefined from %s, with libvirt checking that the disks hold its bitmaps (if they do not, the backup is a full one)",
			last.Name(), filepath.Join(last.Dir, "checkpoint.xml")))
		return true, "", nil
	}
	// Oldest first, so that each finds its parent and the tree is as it was.
	var lastErr error
	for _, kept := range b.store.Backups {
		if _, err := b.dom.Checkpoint(ctx, kept.Name()); !errors.Is(err, virt.ErrNoCheckpoint) {
			continue
		}
		doc := kept.Checkpoint.XML
		_, err := b.dom.CreateCheckpoint(ctx, doc, virt.CreateFlags{Redefine: true, RedefineValidate: true})
		if err != nil && kept == last {
			// Its parent may be gone for good (deleted, its bitmap with it).
			// Each checkpoint's bitmap records every change since it was made,
			// so the last one stands alone as a root.
			if root, ok := withoutParent(doc); ok {
				_, err = b.dom.CreateCheckpoint(ctx, root, virt.CreateFlags{Redefine: true, RedefineValidate: true})
			}
		}
		if err == nil {
			b.notes.Notef("note: checkpoint %s was not in libvirt: redefined from %s", kept.Name(), filepath.Join(kept.Dir, "checkpoint.xml"))
		}
		lastErr = err
	}
	if lastErr != nil {
		return false, fmt.Sprintf("libvirt has no checkpoint %s, and redefining it from %s failed (%v)", last.Name(), last.Dir, lastErr), nil
	}
	return true, "", nil
}

// withoutParent is a checkpoint's XML as a root.
func withoutParent(doc string) (string, bool) {
	var cp libvirtxml.DomainCheckpoint
	if err := cp.Unmarshal(doc); err != nil || cp.Parent == nil {
		return "", false
	}
	cp.Parent = nil
	out, err := cp.Marshal()
	return out, err == nil
}

// incrementals counts the incremental backups since the folder's last full.
func incrementals(store *chain.Store) int {
	n := 0
	for i := len(store.Backups) - 1; i >= 0 && store.Backups[i].Level == chain.Incremental; i-- {
		n++
	}
	return n
}
