package sshhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// forwardingHost is a Host whose "ssh" makes -L's local socket and stays
// until killed, and notes each -L it was given in log; with -G it prints
// no configuration (so the forward keeps ssh's own cipher choice).
func forwardingHost(t *testing.T) (h *Host, log string) {
	t.Helper()
	needTools(t, "python3")
	dir := t.TempDir()
	log = filepath.Join(dir, "log")
	bin := filepath.Join(dir, "fake-ssh")
	script := `#!/bin/sh
while [ "$1" != -- ]; do
	case $1 in
	-G) exit 0 ;;
	-L) spec=$2; echo "$spec" >>` + Quote(log) + ` ;;
	esac
	shift
done
exec python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1].split(":")[0]); s.listen()
time.sleep(600)' "$spec"
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Host{Binary: bin, Name: "fakehost"}, log
}

func forwards(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// A forward Prepare started is the one the next Forward of that socket
// gets: one ssh, not two. Another socket gets its own.
func TestForwardTakesThePreparedOne(t *testing.T) {
	h, log := forwardingHost(t)
	ctx := context.Background()
	h.Prepare(ctx, "/run/vbackup/vm1/nbd.sock")
	f, err := h.Forward(ctx, "/run/vbackup/vm1/nbd.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := forwards(t, log); len(got) != 1 || got[0] != f.Local+":/run/vbackup/vm1/nbd.sock" {
		t.Fatalf("ssh forwarded %q, want once %s to the host's socket", got, f.Local)
	}
	g, err := h.Forward(ctx, "/run/vbackup/vm1/nbd.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Local == f.Local || len(forwards(t, log)) != 2 {
		t.Errorf("a second Forward took the prepared forward again: %q", forwards(t, log))
	}
}

// DropPrepared ends the forwards of one domain that no Forward took, and
// their sockets go; another domain's, beginning beside it on the same
// host, stays for its Forward.
func TestDropPreparedEndsWhatWasNotTaken(t *testing.T) {
	h, log := forwardingHost(t)
	h.Prepare(context.Background(), "/run/vbackup/vm1/nbd.sock")
	h.Prepare(context.Background(), "/run/vbackup/vm12/nbd.sock")
	deadline := time.Now().Add(10 * time.Second)
	for len(forwards(t, log)) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := forwards(t, log)
	if len(got) != 2 {
		t.Fatalf("ssh forwarded %q, want two forwards", got)
	}
	h.DropPrepared("/vm1/nbd.sock")
	if e := h.prepared("/run/vbackup/vm12/nbd.sock"); e == nil {
		t.Errorf("dropping vm1's forwards dropped vm12's too")
	} else {
		<-e.ready
		if e.f != nil {
			e.f.Close()
		}
	}
	for _, g := range got {
		if strings.Contains(g, "/vm1/") {
			got = []string{g}
		}
	}
	local, _, _ := strings.Cut(got[0], ":")
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("the dropped forward's socket %s: %v, want it gone", local, err)
	}
	if e := h.prepared("/run/vbackup/vm1/nbd.sock"); e != nil {
		t.Errorf("a dropped forward can still be taken")
	}
}
