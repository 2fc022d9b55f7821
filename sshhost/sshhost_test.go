package sshhost

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestFromURI(t *testing.T) {
	key := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(key, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uri    string
		ok     bool
		binary string
		opts   []string
	}{
		{"qemu:///system", false, "", nil},
		{"qemu+unix:///session?socket=/x", false, "", nil},
		{"qemu+tls://h/system", false, "", nil},
		{"qemu+ssh://h/system", true, "ssh", nil},
		{"qemu+ssh://root@h:2222/system", true, "ssh", []string{"-p", "2222", "-l", "root"}},
		{"qemu+ssh://u@h/session?keyfile=" + key + "&no_verify=1&no_tty=1", true, "ssh",
			[]string{"-l", "u", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"}},
		{"qemu+ssh://h/system?command=/opt/ssh&known_hosts=/k", true, "/opt/ssh", nil},
		{"qemu+libssh://h/system?known_hosts=/k&known_hosts_verify=ignore&command=/opt/ssh", true, "ssh",
			[]string{"-o", "UserKnownHostsFile=/k", "-o", "StrictHostKeyChecking=no"}},
	} {
		h, ok, err := FromURI(tc.uri)
		if err != nil || ok != tc.ok {
			t.Errorf("FromURI(%s) = ok %v, %v; want ok %v", tc.uri, ok, err, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if h.Binary != tc.binary || !reflect.DeepEqual(h.Opts, tc.opts) || h.Name != "h" {
			t.Errorf("FromURI(%s) = %s %q host %s; want %s %q host h", tc.uri, h.Binary, h.Opts, h.Name, tc.binary, tc.opts)
		}
		if strings.Contains(h.URI, "?") {
			t.Errorf("FromURI(%s).URI = %s keeps the query", tc.uri, h.URI)
		}
	}
	if _, ok, err := FromURI("qemu+ssh://h/system?keyfile=/nonexistent/k"); !ok || err == nil || !strings.Contains(err.Error(), "keyfile=/nonexistent/k") {
		t.Errorf("a missing keyfile: ok %v, err %v", ok, err)
	}
}

func TestExplain(t *testing.T) {
	h := &Host{Name: "hv1", User: "root"}
	for msg, want := range map[string]Reason{
		"Cannot recv data: Host key verification failed.: Connection reset by peer": UnknownHostKey,
		"root@hv1: Permission denied (publickey).":                                  NoAcceptedKey,
		"ssh: connect to host hv1 port 22: Connection refused":                      Unreachable,
		"ssh: Could not resolve hostname hv1: Name or service not known":            Unreachable,
	} {
		e, ok := h.Explain(msg)
		if !ok || e.Reason != want {
			t.Errorf("Explain(%q) = %v, %v; want reason %d", msg, e, ok, want)
		}
	}
	if _, ok := h.Explain("domain not found"); ok {
		t.Error("a libvirt error was taken for SSH's refusal")
	}
}

func TestQuote(t *testing.T) {
	if got := Quote("it's a dir"); got != `'it'\''s a dir'` {
		t.Errorf("Quote = %s", got)
	}
}
