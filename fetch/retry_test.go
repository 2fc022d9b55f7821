package fetch

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"vbackup/internal/testbed"
	"vbackup/progress"
)

type noteLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *noteLog) Infof(f string, a ...any) {}
func (l *noteLog) Notef(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
}

var _ progress.Notifier = (*noteLog)(nil)

// The server closes the connections part way: the disk is fetched again
// from new connections, and the file is whole.
func TestFetchAgainAfterTheConnectionDropped(t *testing.T) {
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "256M")
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 96M", "-c", "write -P 0x22 200M 8M", img)
	uri, _ := qemuNBD(t, img)
	target := strings.TrimPrefix(uri[strings.Index(uri, "socket="):], "socket=")
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			proxy := testbed.NewCutProxy(t, "", target, 16<<20, 1)
			out := filepath.Join(t.TempDir(), "vda."+format)
			notes := &noteLog{}
			p := &lastSample{}
			res, err := Run(context.Background(), []Disk{{Name: "vda", URI: "nbd+unix:///?socket=" + proxy.Sock, Path: out, Format: format, Sum: true}},
				Options{Printer: p, Notes: notes})
			if err != nil {
				t.Fatalf("fetch through a dropped connection: %v", err)
			}
			if proxy.Made() != 1 {
				t.Fatalf("the proxy cut %d times, want once", proxy.Made())
			}
			if len(notes.lines) != 1 || !strings.Contains(notes.lines[0], "fetching it again from a new connection") {
				t.Errorf("notes: %q", notes.lines)
			}
			compare(t, img, out, format)
			if s := p.s.Disks[0]; s.Done != s.Total || s.Total == 0 {
				t.Errorf("progress ended at %d of %d", s.Done, s.Total)
			}
			if d := res.Disks[0]; d.Copied != 104<<20 {
				t.Errorf("copied %d bytes, want the data of the disk once, %d", d.Copied, 104<<20)
			}
		})
	}
}

// A server that drops every connection: the fetch gives up after its
// attempts, saying how many, and leaves nothing.
func TestFetchGivesUpAfterItsAttempts(t *testing.T) {
	testbed.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	testbed.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "128M")
	testbed.Run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64M", img)
	uri, _ := qemuNBD(t, img)
	target := strings.TrimPrefix(uri[strings.Index(uri, "socket="):], "socket=")
	proxy := testbed.NewCutProxy(t, "", target, 8<<20, 100)
	outDir := t.TempDir()
	_, err := Run(context.Background(), []Disk{{Name: "vda", URI: "nbd+unix:///?socket=" + proxy.Sock, Path: filepath.Join(outDir, "vda.qcow2"), Format: "qcow2"}},
		Options{Attempts: 2})
	if err == nil || !strings.Contains(err.Error(), "connection lost") || !strings.Contains(err.Error(), "attempt 2 of 2") {
		t.Fatalf("fetch from a server that drops every connection: %v; want the connection lost, at attempt 2 of 2", err)
	}
	if got := proxy.Made(); got != 2 {
		t.Errorf("the proxy cut %d times, want 2", got)
	}
	if entries, _ := filepath.Glob(filepath.Join(outDir, "*")); len(entries) > 0 {
		t.Errorf("left behind: %v", entries)
	}
}
