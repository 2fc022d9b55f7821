package engine

import (
	"fmt"

	"vbackup/virt"
)

// checkRemote refuses, before anything changes, what a backup from a
// backup server (libvirtd on another host, over SSH) cannot do yet: a
// push writes its images on the hypervisor's own filesystem, and a
// shut-off domain's images would have to be read there.
func checkRemote(dom virt.Domain, req BackupRequest, active bool) error {
	if !req.Sockets.Remote() {
		return nil
	}
	host := req.Sockets.Host.Name
	if !active {
		return fmt.Errorf("domain %q is shut off, and libvirtd runs on %s: backing up a shut-off domain from a backup server is not supported yet "+
			"(its images would be read on %s); start the domain, or run vbackup on %s", dom.Name(), host, host, host)
	}
	if req.Push {
		return fmt.Errorf("--push: libvirtd runs on %s, where libvirt would write the images, not into %s here; leave out --push (the pull export is read through SSH)",
			host, req.Dir)
	}
	return nil
}
