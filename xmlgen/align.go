package xmlgen

import (
	"errors"
	"fmt"
	"strings"

	"vbackup/virt"
)

// AlignCheckpointDisks fits spec to the domain's disks before libvirt sees
// it, so that a checkpoint libvirt (or QEMU, later) would refuse is refused
// here with a reason and a way out. It returns the spec to send and notes
// for the user about disks left out that they did not name.
//
// libvirt's rule (virDomainCheckpointAlignDisks): without <disks>, every
// writable non-empty disk gets a bitmap; once any disk is named, the others
// get checkpoint='no'; an empty or read-only disk may only be 'no'. vbackup
// adds: a bitmap asked on a disk that cannot carry one is an error; without
// any --diskspec, such disks are left out explicitly, each with a note; a
// checkpoint with no bitmap at all is an error.
//
// Disks named by the user come back named by target, in the domain's order,
// with every other disk listed as checkpoint='no'.
func AlignCheckpointDisks(spec CheckpointSpec, disks []virt.Disk) (CheckpointSpec, []string, error) {
	if len(disks) == 0 {
		return spec, nil, errors.New("domain has no disks: a checkpoint needs at least one disk")
	}
	if len(spec.Disks) == 0 {
		return alignDefault(spec, disks)
	}

	named := make(map[string]DiskSpec, len(spec.Disks)) // by target
	for _, d := range spec.Disks {
		disk, ok := findDisk(disks, d.Name)
		if !ok {
			return spec, nil, fmt.Errorf("domain has no disk %q; its disks are %s", d.Name, targets(disks))
		}
		if _, dup := named[disk.Target]; dup {
			return spec, nil, fmt.Errorf("disk %q is named twice by --diskspec; name each disk once", disk.Target)
		}
		if d.WantsBitmap() && !disk.CanCarryBitmap() {
			return spec, nil, fmt.Errorf("disk %q %s; leave it out with --diskspec %s,checkpoint=no",
				disk.Target, whyNoBitmap(disk), disk.Target)
		}
		d.Name = disk.Target
		named[disk.Target] = d
	}

	var notes []string
	out := make([]DiskSpec, 0, len(disks))
	bitmaps := 0
	for _, disk := range disks {
		d, ok := named[disk.Target]
		if !ok {
			d = DiskSpec{Name: disk.Target, Checkpoint: checkpointNo}
			// Naming one disk silently drops the others; say so for those
			// that would otherwise have been checkpointed.
			if disk.CanCarryBitmap() {
				notes = append(notes, fmt.Sprintf("disk %s is not named by --diskspec: left out of this checkpoint", disk.Target))
			}
		}
		if d.WantsBitmap() {
			bitmaps++
		}
		out = append(out, d)
	}
	if err := noBitmapPossible(disks); err != nil {
		return spec, nil, err
	}
	if bitmaps == 0 {
		return spec, nil, errors.New("every disk has checkpoint=no, so this checkpoint would track nothing; give at least one disk a bitmap with --diskspec DISK,checkpoint=bitmap")
	}
	spec.Disks = out
	return spec, notes, nil
}

// alignDefault handles a spec without disks: libvirt's default, unless a
// disk's format cannot carry a bitmap, in which case the list is made
// explicit so the user sees what is left out and QEMU is not asked for a
// bitmap on a raw disk.
func alignDefault(spec CheckpointSpec, disks []virt.Disk) (CheckpointSpec, []string, error) {
	if err := noBitmapPossible(disks); err != nil {
		return spec, nil, err
	}
	var notes []string
	out := make([]DiskSpec, 0, len(disks))
	for _, disk := range disks {
		switch {
		case disk.CanCarryBitmap():
			out = append(out, DiskSpec{Name: disk.Target, Checkpoint: checkpointBitmap})
		case disk.Empty() || disk.ReadOnly:
			// libvirt leaves these out by itself; a CD-ROM is no news.
			out = append(out, DiskSpec{Name: disk.Target, Checkpoint: checkpointNo})
		default:
			out = append(out, DiskSpec{Name: disk.Target, Checkpoint: checkpointNo})
			notes = append(notes, fmt.Sprintf("disk %s (%s) cannot carry a bitmap: left out of this checkpoint", disk.Target, obstacle(disk)))
		}
	}
	if len(notes) == 0 {
		return spec, nil, nil
	}
	spec.Disks = out
	return spec, notes, nil
}

// noBitmapPossible refuses a domain none of whose disks can carry a bitmap,
// saying why for each.
func noBitmapPossible(disks []virt.Disk) error {
	var reasons []string
	for _, disk := range disks {
		if disk.CanCarryBitmap() {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("%s is %s", disk.Target, obstacle(disk)))
	}
	return fmt.Errorf("no disk of the domain can carry a checkpoint bitmap (%s): only writable qcow2 disks can", strings.Join(reasons, ", "))
}

// findDisk looks name up as libvirt's virDomainDiskByName does: as a target,
// or as a source path that only one disk has.
func findDisk(disks []virt.Disk, name string) (virt.Disk, bool) {
	for _, d := range disks {
		if d.Target == name {
			return d, true
		}
	}
	var found []virt.Disk
	for _, d := range disks {
		if d.Source != "" && d.Source == name {
			found = append(found, d)
		}
	}
	if len(found) == 1 {
		return found[0], true
	}
	return virt.Disk{}, false
}

// obstacle names what keeps disk from carrying a bitmap, in a word or two;
// "" if nothing does.
func obstacle(disk virt.Disk) string {
	switch {
	case disk.CanCarryBitmap():
		return ""
	case disk.Empty():
		return "empty"
	case disk.ReadOnly:
		return "read-only"
	default:
		return disk.Format
	}
}

// whyNoBitmap completes the sentence `disk "vdb" …`.
func whyNoBitmap(disk virt.Disk) string {
	switch o := obstacle(disk); o {
	case "empty":
		return "is empty (no medium): an empty drive cannot carry a checkpoint bitmap"
	case "read-only":
		return "is read-only: only writable disks can carry a checkpoint bitmap"
	default:
		return fmt.Sprintf("is %s: only qcow2 disks can carry a checkpoint bitmap", o)
	}
}

func targets(disks []virt.Disk) string {
	names := make([]string, len(disks))
	for i, d := range disks {
		names[i] = d.Target
	}
	return strings.Join(names, ", ")
}
