package testbed

// The second host's system-mode libvirtd (scripts/remotehost.sh): root's,
// with state, config and sockets of its own (tmpfs mounts in the host's
// mount namespace), its QEMU running as libvirt-qemu: neither the SSH user
// nor root, as on a Debian hypervisor.
//
//	sys := host.System()
//	dom := sys.Domain(t)                       // under /var/lib/libvirt/images
//	vb(t, open, "-c", sys.URI(), "backup", dom, "--to", dir)       // as root
//	vb(t, open, "-c", sys.MemberURI(), "backup", dom, "--to", dir) // as vbremote
//	sys.DiskSum(t, dom, "vda")                 // read as root, through SSH

// memberUser is the system daemon's non-root SSH user: a member of its
// unix_sock_group.
const memberUser = remoteUser

// System is the host's system daemon as a Remote whose helpers (Domain,
// Write, DiskSum, SSH, ...) log in as root and speak to qemu:///system
// there; its URI is qemu+ssh://root@ADDR/system?command=SSH&keyfile=KEY.
func (r *Remote) System() *Remote { return r.system() }

func (r *Remote) system() *Remote {
	s := *r
	s.user, s.local, s.images = "root", "qemu:///system", "/var/lib/libvirt/images"
	s.uri = r.systemURI
	return &s
}

// MemberURI is the system daemon's URI for vbremote, who is not root but a
// member of the group its read-write socket allows (unix_sock_group):
// qemu+ssh://vbremote@ADDR/system?command=SSH&keyfile=KEY.
func (r *Remote) MemberURI() string { return r.memberURI }

// MemberUser is the SSH user of MemberURI.
func (r *Remote) MemberUser() string { return memberUser }
