package libvirtconn_test

import (
	"context"
	"os"
	"testing"

	"vbackup/internal/testbed"
	"vbackup/virt/libvirtconn"
	"vbackup/virt/virttest"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

func TestConformanceTestDriver(t *testing.T) {
	virttest.Run(t, func(t *testing.T) virttest.Subject {
		conn, err := libvirtconn.Open(context.Background(), virttest.TestDriverURI(t), libvirtconn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return virttest.Subject{Conn: conn, Domain: virttest.TestDriverDomain}
	})
}

func TestConformanceRealDaemon(t *testing.T) {
	bed := testbed.Get(t)
	virttest.Run(t, func(t *testing.T) virttest.Subject {
		name := bed.Domain(t, "vda:qcow2:64M", "vdb:raw:16M")
		conn, err := libvirtconn.Open(context.Background(), bed.URI(), libvirtconn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return virttest.Subject{Conn: conn, Domain: name, Size: true, Folder: func(t *testing.T) string { return bed.Folder(t) }}
	})
}
