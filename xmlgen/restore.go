package xmlgen

import (
	"fmt"
	"slices"

	"libvirt.org/go/libvirtxml"
)

// RestoredDisk is a disk image a restore produced.
type RestoredDisk struct {
	Path   string // absolute
	Format string // qcow2 or raw
}

// RestoredDomain turns the definition of a backed-up domain into a new
// domain running from restored images: a new name, no UUID (libvirt makes
// one), each restored disk pointing at its image, no MAC addresses (libvirt
// makes new ones, so the copy can run beside the original). A disk that was
// not restored is left out, since the new domain would otherwise share the
// original's image; an empty drive stays. It returns notes for the user.
func RestoredDomain(doc, name string, disks map[string]RestoredDisk) (string, []string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(doc); err != nil {
		return "", nil, fmt.Errorf("the saved domain definition: %w", err)
	}
	dom.Name, dom.UUID = name, ""
	dom.ID = nil
	var notes []string
	if dom.Devices != nil {
		kept := dom.Devices.Disks[:0]
		used := map[string]bool{}
		for _, d := range dom.Devices.Disks {
			target := ""
			if d.Target != nil {
				target = d.Target.Dev
			}
			img, restored := disks[target]
			switch {
			case restored:
				used[target] = true
				d.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: img.Path}}
				d.BackingStore = nil
				if d.Driver == nil {
					d.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
				}
				d.Driver.Type = img.Format
			case d.Source == nil || (d.Source.File != nil && d.Source.File.File == "" && d.Source.Block == nil):
				// An empty drive: nothing to share.
			case d.Device == "cdrom" || d.ReadOnly != nil:
				notes = append(notes, fmt.Sprintf("disk %s (read-only) still points at the original's medium", target))
			default:
				notes = append(notes, fmt.Sprintf("disk %s was not restored: left out of domain %s", target, name))
				continue
			}
			kept = append(kept, d)
		}
		dom.Devices.Disks = kept
		var missing []string
		for target := range disks {
			if !used[target] {
				missing = append(missing, target)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return "", nil, fmt.Errorf("the saved domain definition has no disk %v", missing)
		}
		for i := range dom.Devices.Interfaces {
			dom.Devices.Interfaces[i].MAC = nil
		}
	}
	out, err := dom.Marshal()
	if err != nil {
		return "", nil, err
	}
	return out + "\n", notes, nil
}
