package virtfake_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"vbackup/virt"
	"vbackup/virt/virtfake"
	"vbackup/virt/virttest"
)

// The fake is the third subject of the conformance suite, beside libvirt's
// test driver and a real libvirtd (virt/libvirtconn): what it asserts of
// them, it asserts of the fake.
func TestConformance(t *testing.T) {
	var pools atomic.Int64
	virttest.Run(t, func(t *testing.T) virttest.Subject {
		conn := virtfake.New()
		conn.AddDomain(virtfake.DomainSpec{Name: "vm1", Disks: []virt.Disk{
			{Target: "vda", Format: "qcow2", Source: "/guest/vm1-vda.qcow2"},
			{Target: "vdb", Format: "raw", Source: "/guest/vm1-vdb.img"},
		}})
		conn.AddDomain(virtfake.DomainSpec{Name: "guest", Agent: true, Disks: []virt.Disk{{Target: "vda"}}})
		return virttest.Subject{Conn: conn, Domain: "vm1", Size: true, Folder: func(t *testing.T) string { return t.TempDir() },
			Guest: func(*testing.T) string { return "guest" },
			Pool: func(t *testing.T, active bool) string {
				name := fmt.Sprintf("pool%d", pools.Add(1))
				conn.AddPool(name, t.TempDir(), active)
				return name
			}}
	})
}
