package xmlgen

import (
	"strings"
	"testing"
)

func TestParseServer(t *testing.T) {
	long := "/" + strings.Repeat("s", maxSocketPath)
	tests := []struct {
		in      string
		want    Server
		wantErr string
	}{
		{in: "unix:/run/vbackup/vm1.sock", want: Server{Socket: "/run/vbackup/vm1.sock"}},
		{in: "unix:/a:b", want: Server{Socket: "/a:b"}},
		{in: "unix:" + long[:maxSocketPath], want: Server{Socket: long[:maxSocketPath]}},
		{in: "tcp:localhost:10809", want: Server{Host: "localhost", Port: 10809}},
		{in: "tcp:backup-host.example.org:1", want: Server{Host: "backup-host.example.org", Port: 1}},
		{in: "tcp:192.0.2.7:65535", want: Server{Host: "192.0.2.7", Port: 65535}},
		{in: "tcp:[::1]:10809", want: Server{Host: "::1", Port: 10809}},
		{in: "tcp:[2001:db8::7]:10809", want: Server{Host: "2001:db8::7", Port: 10809}},

		{in: "", wantErr: `--server "": say how to listen: unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT`},
		{in: "/run/x.sock", wantErr: `--server "/run/x.sock": say how to listen: unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT`},
		{in: "nbd:/run/x.sock", wantErr: `--server "nbd:/run/x.sock": unknown transport "nbd"; write unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT`},
		{in: "UNIX:/run/x.sock", wantErr: `--server "UNIX:/run/x.sock": unknown transport "UNIX"; write unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT`},
		{in: "unix:", wantErr: `--server "unix:": the socket path is empty; write unix:/ABSOLUTE/SOCKET`},
		{in: "unix:run/x.sock", wantErr: `--server "unix:run/x.sock": the socket path must be absolute, not "run/x.sock"`},
		{in: "unix:/run/", wantErr: `--server "unix:/run/": the socket path names a directory; write unix:/run/SOCKET`},
		{in: "unix:" + long, wantErr: `--server "unix:` + long + `": the socket path is 108 bytes long; a unix socket path has at most 107`},
		{in: "tcp:localhost", wantErr: `--server "tcp:localhost": give a port too, tcp:HOST:PORT: libvirt does not pick one for a backup's NBD server`},
		{in: "tcp:[::1]", wantErr: `--server "tcp:[::1]": give a port too, tcp:HOST:PORT: libvirt does not pick one for a backup's NBD server`},
		{in: "tcp:", wantErr: `--server "tcp:": give a port too, tcp:HOST:PORT: libvirt does not pick one for a backup's NBD server`},
		{in: "tcp:localhost:", wantErr: `--server "tcp:localhost:": the port is empty; write tcp:HOST:PORT`},
		{in: "tcp::10809", wantErr: `--server "tcp::10809": the host is empty; write tcp:HOST:PORT`},
		{in: "tcp:::1:10809", wantErr: `--server "tcp:::1:10809": write tcp:HOST:PORT, with an IPv6 address in brackets as in tcp:[::1]:10809`},
		{in: "tcp:localhost:0", wantErr: `--server "tcp:localhost:0": the port must be a number from 1 to 65535, not "0"`},
		{in: "tcp:localhost:65536", wantErr: `--server "tcp:localhost:65536": the port must be a number from 1 to 65535, not "65536"`},
		{in: "tcp:localhost:nbd", wantErr: `--server "tcp:localhost:nbd": the port must be a number from 1 to 65535, not "nbd"`},
		{in: "tcp:localhost:-1", wantErr: `--server "tcp:localhost:-1": the port must be a number from 1 to 65535, not "-1"`},
		{in: "tcp:back_up:10809", wantErr: `--server "tcp:back_up:10809": "back_up" is neither a host name (letters, digits, '.' and '-') nor an IP address`},
		{in: "tcp:[fe80::1%eth0]:10809", wantErr: `--server "tcp:[fe80::1%eth0]:10809": "fe80::1%eth0" is neither a host name (letters, digits, '.' and '-') nor an IP address`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseServer(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseServer(%q) = %+v, want error %q", tt.in, got, tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("ParseServer(%q) error:\n got %s\nwant %s", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseServer(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseServer(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("ParseServer(%q).String() = %q", tt.in, got.String())
			}
		})
	}
}
