package virt

import "libvirt.org/go/libvirtxml"

// BackingFiles lists the files of the backing chain that a live domain
// definition shows below disk target's image, nearest first; none when the
// image stands alone. libvirt ends every chain with an empty
// <backingStore/>, which names no file.
func BackingFiles(def *libvirtxml.Domain, target string) []string {
	if def == nil || def.Devices == nil {
		return nil
	}
	var out []string
	for _, d := range def.Devices.Disks {
		if d.Target == nil || d.Target.Dev != target {
			continue
		}
		for b := d.BackingStore; b != nil; b = b.BackingStore {
			if _, path := diskSource(b.Source); path != "" {
				out = append(out, path)
			}
		}
	}
	return out
}
