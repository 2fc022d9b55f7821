package xmlgen

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Server is where a pull backup's NBD server listens: a unix socket, or a
// TCP host and port.
type Server struct {
	Socket string // unix socket path; "" for TCP
	Host   string // TCP: host name or IP address (IPv6 without brackets)
	Port   int    // TCP
	TLS    bool   // tls='yes': the daemon's NBD TLS certificates must be set up
}

const serverSyntax = "unix:/ABSOLUTE/SOCKET or tcp:HOST:PORT"

// maxSocketPath is what fits a unix socket address (sun_path, 108 bytes with
// its terminating NUL): QEMU cannot listen on a longer path.
const maxSocketPath = 107

// dnsName is the schema's dnsName pattern (basictypes.rng).
var dnsName = regexp.MustCompile(`^[a-zA-Z0-9.\-]+$`)

// ParseServer parses the argument of --server: unix:/ABSOLUTE/SOCKET or
// tcp:HOST:PORT, with an IPv6 address in brackets (tcp:[::1]:10809). The
// port is required: libvirt does not pick one for a backup ("must specify
// TCP port for now").
func ParseServer(s string) (Server, error) {
	fail := func(format string, args ...any) (Server, error) {
		return Server{}, fmt.Errorf("--server %q: %s", s, fmt.Sprintf(format, args...))
	}
	transport, addr, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		return fail("say how to listen: %s", serverSyntax)
	case transport == "unix":
		switch {
		case addr == "":
			return fail("the socket path is empty; write unix:/ABSOLUTE/SOCKET")
		case !filepath.IsAbs(addr):
			return fail("the socket path must be absolute, not %q", addr)
		case strings.HasSuffix(addr, "/"):
			return fail("the socket path names a directory; write unix:%sSOCKET", addr)
		case len(addr) > maxSocketPath:
			return fail("the socket path is %d bytes long; a unix socket path has at most %d", len(addr), maxSocketPath)
		}
		return Server{Socket: addr}, nil
	case transport == "tcp":
		host, portText, err := net.SplitHostPort(addr)
		if err != nil {
			if !strings.Contains(addr, ":") || strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
				return fail("give a port too, tcp:HOST:PORT: libvirt does not pick one for a backup's NBD server")
			}
			return fail("write tcp:HOST:PORT, with an IPv6 address in brackets as in tcp:[::1]:10809")
		}
		port, err := strconv.Atoi(portText)
		switch {
		case host == "":
			return fail("the host is empty; write tcp:HOST:PORT")
		case net.ParseIP(host) == nil && (!dnsName.MatchString(host) || strings.Contains(host, ":")):
			return fail("%q is neither a host name (letters, digits, '.' and '-') nor an IP address", host)
		case portText == "":
			return fail("the port is empty; write tcp:HOST:PORT")
		case err != nil || port < 1 || port > 65535:
			return fail("the port must be a number from 1 to 65535, not %q", portText)
		}
		return Server{Host: host, Port: port}, nil
	default:
		return fail("unknown transport %q; write %s", transport, serverSyntax)
	}
}

// String renders s in --server syntax, without TLS, which has its own flag.
func (s Server) String() string {
	if s.Socket != "" {
		return "unix:" + s.Socket
	}
	return "tcp:" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// check refuses a Server that ParseServer would not have made.
func (s Server) check() error {
	if s.Socket != "" && (s.Host != "" || s.Port != 0) {
		return fmt.Errorf("server: give a unix socket or a TCP host and port, not both")
	}
	_, err := ParseServer(s.String())
	return err
}
