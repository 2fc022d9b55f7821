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
	Block  bool   // Path is a block device (a --disk NAME=/dev/... target)
	// Backup says Path is an overlay on a backup's images, on a host
	// whose libvirt has the DAC driver: it must not relabel the chain. When a domain starts, it chowns
	// every image of a disk's backing chain to QEMU's user and gives back
	// only the top one's owner: the backups would end up QEMU's, and
	// writable by it. relabel='no' on the top image holds for the chain;
	// QEMU's read access is given otherwise (ACL entries).
	Backup bool
}

// RestoredDomain turns the definition of a backed-up domain into a new
// domain running from restored images, that can run beside the original
// and shares none of its files or devices: a new name, no UUID and no MAC
// addresses (libvirt makes new ones), each restored disk pointing at its
// image, its own UEFI variables, graphics on a free port, no passed-through
// host devices. A disk that was not restored is left out; an empty drive
// stays. It returns notes for the user.
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
				if img.Block {
					d.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: img.Path}}
				}
				if img.Backup {
					keep := []libvirtxml.DomainDeviceSecLabel{{Model: "dac", Relabel: "no"}}
					if d.Source.File != nil {
						d.Source.File.SecLabel = keep
					} else {
						d.Source.Block.SecLabel = keep
					}
				}
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
		var ifaces []libvirtxml.DomainInterface
		for _, nic := range dom.Devices.Interfaces {
			if nic.Source != nil && nic.Source.Hostdev != nil {
				notes = append(notes, "a passed-through network device (an interface of type hostdev) is left out: it belongs to the original")
				continue
			}
			nic.MAC = nil
			ifaces = append(ifaces, nic)
		}
		dom.Devices.Interfaces = ifaces
		if len(dom.Devices.Hostdevs) > 0 {
			notes = append(notes, fmt.Sprintf("%d passed-through host device(s) left out: they belong to the original", len(dom.Devices.Hostdevs)))
			dom.Devices.Hostdevs = nil
		}
		for _, g := range dom.Devices.Graphics {
			// A fixed port would be taken by the original.
			if g.VNC != nil && g.VNC.Port > 0 {
				g.VNC.Port, g.VNC.AutoPort = 0, "yes"
			}
			if g.Spice != nil && (g.Spice.Port > 0 || g.Spice.TLSPort > 0) {
				g.Spice.Port, g.Spice.TLSPort, g.Spice.AutoPort = 0, 0, "yes"
			}
		}
	}
	if dom.OS != nil && dom.OS.NVRam != nil {
		// The UEFI variables file is the original's: the copy gets its own,
		// made by libvirt from the template.
		notes = append(notes, "the UEFI variables (nvram) start afresh from the firmware's template")
		dom.OS.NVRam.NVRam, dom.OS.NVRam.Source = "", nil
		if dom.OS.NVRam.Template == "" {
			dom.OS.NVRam = nil
		}
	}
	out, err := dom.Marshal()
	if err != nil {
		return "", nil, err
	}
	return out + "\n", notes, nil
}
