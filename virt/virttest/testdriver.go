package virttest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDriverDomain is the running domain of TestDriverURI's node file.
const TestDriverDomain = "vm1"

// nodeXML defines, for libvirt's test driver, a running domain with a qcow2
// disk vda and a raw disk vdb, like the real test bed's domains.
const nodeXML = `<node>
  <domain type='test'>
    <name>vm1</name>
    <uuid>1b9c6c3e-3f4a-4b6e-9d1a-2c0f3e6a7b10</uuid>
    <memory unit='MiB'>64</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/guest/vm1-vda.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <source file='/guest/vm1-vdb.img'/>
        <target dev='vdb' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</node>
`

// TestDriverURI writes a fresh node file and returns the test driver URI
// that reads it. Every connection to that URI starts from the file again,
// so state (checkpoints) lives exactly as long as one connection.
func TestDriverURI(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.xml")
	if err := os.WriteFile(path, []byte(nodeXML), 0o644); err != nil {
		t.Fatal(err)
	}
	return "test://" + path
}
