package libvirtconn_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

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
		return virttest.Subject{Conn: conn, Domain: name, Size: true, Folder: func(t *testing.T) string { return bed.Folder(t) },
			Undefine: func(name string) { _, _ = bed.TryVirsh("undefine", name) },
			Guest:    func(t *testing.T) string { return bed.Guest(t) },
			Pool:     func(t *testing.T, active bool) string { return bedPool(t, bed, active) }}
	})
}

// Closing a connection frees it on the daemon's side too: libvirtd's open
// files do not grow with connections opened and closed.
func TestCloseReleasesTheDaemonSide(t *testing.T) {
	bed := testbed.Get(t)
	pidText, err := os.ReadFile(bed.Dir() + "/run/libvirtd.pid")
	if err != nil {
		t.Fatal(err)
	}
	fds := func() int {
		entries, err := os.ReadDir("/proc/" + strings.TrimSpace(string(pidText)) + "/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	open := func() {
		c, err := libvirtconn.Open(context.Background(), bed.URI(), libvirtconn.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	open() // warm up
	before := fds()
	for i := 0; i < 100; i++ {
		open()
	}
	time.Sleep(200 * time.Millisecond) // the daemon closes its end asynchronously
	if after := fds(); after > before+10 {
		t.Fatalf("libvirtd holds %d files after 100 connections were closed, %d before", after, before)
	}
}
