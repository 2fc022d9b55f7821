package engine

import "fmt"

// checkRemote refuses, before anything changes, what a backup from a
// backup server (libvirtd on another host, over SSH) cannot do: a push
// writes its images on the hypervisor's own filesystem. (A shut-off
// domain's images are read there, through SSH: offline_host.go.)
func checkRemote(req BackupRequest, active bool) error {
	if !req.Sockets.Remote() {
		return nil
	}
	host := req.Sockets.Host.Name
	if req.Push && active {
		return fmt.Errorf("--push: libvirtd runs on %s, where libvirt would write the images, not into %s here; leave out --push (the pull export is read through SSH)",
			host, req.Dir)
	}
	return nil
}
