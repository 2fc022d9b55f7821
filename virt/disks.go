package virt

import "libvirt.org/go/libvirtxml"

// DisksOf reads a domain definition's disks in the project's terms: the one
// reading of a <disk>, for libvirtconn and the in-memory fake alike, so the
// two cannot describe the same XML differently.
func DisksOf(def *libvirtxml.Domain) []Disk {
	if def == nil || def.Devices == nil {
		return nil
	}
	disks := make([]Disk, 0, len(def.Devices.Disks))
	for _, x := range def.Devices.Disks {
		disk := Disk{Device: x.Device, ReadOnly: x.ReadOnly != nil}
		if disk.Device == "" {
			disk.Device = "disk"
		}
		if x.Target != nil {
			disk.Target = x.Target.Dev
		}
		if x.Driver != nil {
			disk.Format = x.Driver.Type
		}
		disk.Type, disk.Source = diskSource(x.Source)
		disks = append(disks, disk)
	}
	return disks
}

func diskSource(s *libvirtxml.DomainDiskSource) (typ, path string) {
	switch {
	case s == nil:
		return "", ""
	case s.File != nil:
		return "file", s.File.File
	case s.Block != nil:
		return "block", s.Block.Dev
	case s.Volume != nil:
		return "volume", s.Volume.Pool + "/" + s.Volume.Volume
	case s.Network != nil:
		return "network", s.Network.Protocol + ":" + s.Network.Name
	case s.Dir != nil:
		return "dir", s.Dir.Dir
	case s.NVME != nil:
		return "nvme", "nvme"
	case s.VHostUser != nil:
		return "vhostuser", "vhostuser"
	}
	return "", ""
}
