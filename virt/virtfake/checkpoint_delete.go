package virtfake

import (
	"context"

	"vbackup/virt"
)

// DeleteCheckpoint deletes a checkpoint as qemuCheckpointDelete does: its
// children move to its parent (or, with Children, go too; with
// ChildrenOnly only they go), its bitmaps leave the disks unless
// MetadataOnly, and the current checkpoint moves up when it is deleted.
func (d *Domain) DeleteCheckpoint(ctx context.Context, name string, flags virt.DeleteFlags) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("DeleteCheckpoint", "virDomainCheckpointLookupByName"); err != nil {
		return err
	}
	cp, err := d.lookup(name)
	if err != nil {
		return err
	}
	const op = "virDomainCheckpointDelete"
	if !flags.MetadataOnly && !d.active {
		return newErr(op, errOperationUnsup, "cannot delete checkpoint for inactive domain")
	}
	if flags.Children || flags.ChildrenOnly {
		wasCurrent := false
		for _, desc := range d.descendants(name) {
			wasCurrent = wasCurrent || desc.name == d.current
			if err := d.discard(op, desc, false, flags.MetadataOnly); err != nil {
				return err
			}
		}
		if wasCurrent {
			d.current = name
		}
		if flags.ChildrenOnly {
			return nil
		}
	} else {
		for _, child := range d.checkpoints {
			if child.parent == name {
				child.parent = cp.parent
			}
		}
	}
	return d.discard(op, cp, true, flags.MetadataOnly)
}

// descendants lists the checkpoints below name, each before its parent.
func (d *Domain) descendants(name string) []*checkpoint {
	var out []*checkpoint
	for _, cp := range d.checkpoints {
		if cp.parent == name {
			out = append(out, d.descendants(cp.name)...)
			out = append(out, cp)
		}
	}
	return out
}

// discard removes one checkpoint; its bitmaps go at once or not at all, as
// in libvirt's single QEMU transaction.
func (d *Domain) discard(op string, cp *checkpoint, moveCurrent, metadataOnly bool) error {
	if !metadataOnly {
		for _, x := range cp.disks {
			if x.checkpoint != "bitmap" || diskByTarget(d.live, x.name) == nil {
				continue
			}
			if _, ok := d.bitmaps[x.name][x.bitmap]; !ok {
				return newErr(op, errInternal, "bitmap '%s' not found in backing chain of '%s'", x.bitmap, x.name)
			}
		}
		for _, x := range cp.disks {
			if x.checkpoint == "bitmap" {
				delete(d.bitmaps[x.name], x.bitmap)
			}
		}
	}
	if d.current == cp.name {
		d.current = ""
		if moveCurrent && d.checkpoint(cp.parent) != nil {
			d.current = cp.parent
		}
	}
	for i, other := range d.checkpoints {
		if other == cp {
			d.checkpoints = append(d.checkpoints[:i], d.checkpoints[i+1:]...)
			break
		}
	}
	return nil
}
