package nbd

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want Target
		err  string // a part of the error, when one is wanted
	}{
		// The export name examples of the NBD URI spec.
		{uri: "nbd://example.com/disk", want: Target{Network: "tcp", Address: "example.com:10809", Export: "disk"}},
		{uri: "nbd+unix:///disk?socket=sock", want: Target{Network: "unix", Address: "sock", Export: "disk"}},
		{uri: "nbd://example.com/", want: Target{Network: "tcp", Address: "example.com:10809"}},
		{uri: "nbd://example.com", want: Target{Network: "tcp", Address: "example.com:10809"}},
		{uri: "nbd://example.com//disk", want: Target{Network: "tcp", Address: "example.com:10809", Export: "/disk"}},
		{uri: "nbd://example.com/hello%20world", want: Target{Network: "tcp", Address: "example.com:10809", Export: "hello world"}},

		{uri: "nbd://10.0.0.1:1234/vda", want: Target{Network: "tcp", Address: "10.0.0.1:1234", Export: "vda"}},
		{uri: "nbd://[::1]/vda", want: Target{Network: "tcp", Address: "[::1]:10809", Export: "vda"}},
		{uri: "nbd://[fe80::1]:7000/", want: Target{Network: "tcp", Address: "[fe80::1]:7000"}},
		{uri: "nbds://host/vda", want: Target{Network: "tcp", Address: "host:10809", Export: "vda", TLS: true}},
		{uri: "nbd+unix:///vda?socket=/run/libvirt/qemu/backup%20vda.sock",
			want: Target{Network: "unix", Address: "/run/libvirt/qemu/backup vda.sock", Export: "vda"}},
		{uri: "nbd+unix:///?socket=%00/abstract", want: Target{Network: "unix", Address: "\x00/abstract"}},
		{uri: "nbds+unix:///vda?socket=/s&tls-certificates=/etc/pki/qemu&tls-hostname=vm1&tls-verify-peer=0",
			want: Target{Network: "unix", Address: "/s", Export: "vda", TLS: true,
				TLSCertificates: "/etc/pki/qemu", TLSHostname: "vm1", TLSNoVerify: true}},
		{uri: "nbds://h/?tls-verify-peer=false&tls-type=x509", want: Target{Network: "tcp", Address: "h:10809", TLS: true, TLSNoVerify: true}},
		{uri: "nbd://h/?x-experiment=1", want: Target{Network: "tcp", Address: "h:10809"}},

		{uri: "http://h/vda", err: `scheme "http" is not an NBD scheme`},
		{uri: "/tmp/sock", err: "no scheme"},
		{uri: "nbd+unix:///vda", err: "needs ?socket=PATH"},
		{uri: "nbd+unix://host/vda?socket=/s", err: "takes no host"},
		{uri: "nbd:///vda", err: "no host"},
		{uri: "nbd://h/?socket=/s", err: "socket= is only for"},
		{uri: "nbd://h/?color=red", err: `unknown query parameter "color"`},
		{uri: "nbds://h/?tls-type=psk", err: "only x509"},
		{uri: "nbds://h/?tls-verify-peer=maybe", err: "want 0 or 1"},
		{uri: "nbd+unix:///?socket=/a&socket=/b", err: "given 2 times"},
		{uri: "nbd:vda", err: "want nbd://"},
	} {
		got, err := ParseURI(tc.uri)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseURI(%q) = %+v, %v; want an error with %q", tc.uri, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, %v;\nwant %+v", tc.uri, got, err, tc.want)
			continue
		}
		back, err := ParseURI(got.String())
		if err != nil || back != got {
			t.Errorf("ParseURI(%q).String() = %q, which parses as %+v, %v", tc.uri, got.String(), back, err)
		}
	}
}

func TestTargetString(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Network: "unix", Address: "/run/x.sock", Export: "vda"}, "nbd+unix:///vda?socket=%2Frun%2Fx.sock"},
		{Target{Network: "tcp", Address: "h:10809", Export: "a b"}, "nbd://h/a%20b"},
		{Target{Network: "tcp", Address: "[::1]:10809"}, "nbd://[::1]/"},
		{Target{Network: "tcp", Address: "h:99", TLS: true, TLSNoVerify: true}, "nbds://h:99/?tls-verify-peer=0"},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("%+v.String() = %q; want %q", tc.t, got, tc.want)
		}
	}
}
