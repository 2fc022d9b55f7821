package job

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"vbackup/sshhost"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// ServerRequest is the NBD server a pull job is asked for, as the user
// gave it: Set false for vbackup's private unix socket; tcp:HOST without a
// port is allowed (PickPort: a free one is picked when the job starts),
// though libvirt 9.0 wants one.
type ServerRequest struct {
	Spec     xmlgen.Server
	Set      bool
	PickPort bool
	Insecure bool // an unencrypted TCP export beyond loopback is what the user wants
}

// ParseServer reads an address as --server takes it: unix:/abs/socket or
// tcp:HOST[:PORT].
func ParseServer(s string, tls bool) (ServerRequest, error) {
	if host, ok := strings.CutPrefix(s, "tcp:"); ok && !hasPort(host) {
		probe, err := xmlgen.ParseServer("tcp:" + joinHostPort(host, 1))
		if err != nil {
			return ServerRequest{}, err
		}
		probe.Port, probe.TLS = 0, tls
		return ServerRequest{Spec: probe, Set: true, PickPort: true}, nil
	}
	srv, err := xmlgen.ParseServer(s)
	if err != nil {
		return ServerRequest{}, err
	}
	srv.TLS = tls
	return ServerRequest{Spec: srv, Set: true}, nil
}

// CheckExposure refuses an unencrypted TCP export beyond loopback unless
// Insecure says that is what the user wants; what names the address as
// the user gave it.
func (r ServerRequest) CheckExposure(what string) error {
	srv := r.Spec
	if srv.Socket != "" {
		return nil
	}
	if ip := net.ParseIP(strings.Trim(srv.Host, "[]")); !srv.TLS && !r.Insecure && (ip == nil || !ip.IsLoopback()) && srv.Host != "localhost" {
		return fmt.Errorf("%s would serve the disks unencrypted to the network; add --tls, or --insecure if that is what you want", what)
	}
	return nil
}

func hasPort(host string) bool {
	if strings.HasPrefix(host, "[") {
		return strings.Contains(host, "]:")
	}
	return strings.Contains(host, ":")
}

func joinHostPort(host string, port int) string {
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

// prepareServer settles the pull job's NBD server: a private unix socket by
// default, a free port for tcp:HOST, and the checks that need the network.
// local says whether libvirtd runs on this host, so that ports can be tried.
func prepareServer(ctx context.Context, sockets Sockets, domain string, disks []virt.Disk, req ServerRequest, local bool) (*xmlgen.Server, error) {
	if !req.Set && sockets.Host != nil {
		// On libvirtd's host, through SSH (remote.go).
		return sockets.remoteServer(ctx, domain, disks, req.Spec.TLS)
	}
	if !req.Set {
		dir, err := sockets.dir(domain, disks)
		if err != nil {
			return nil, err
		}
		sock := filepath.Join(dir, socketName)
		// No job runs (checked before): a socket left there is stale.
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return &xmlgen.Server{Socket: sock, TLS: req.Spec.TLS}, nil
	}
	srv := req.Spec
	if srv.Socket != "" {
		if _, err := os.Stat(srv.Socket); err == nil {
			return nil, fmt.Errorf("--server unix:%s: a file is already there; remove it or pick another path", srv.Socket)
		}
		return &srv, nil
	}
	if err := req.CheckExposure("--server tcp:" + srv.Host); err != nil {
		return nil, err
	}
	if !local {
		if req.PickPort {
			return nil, fmt.Errorf("--server tcp:%s: give a port (tcp:%s): libvirtd is on another host, so vbackup cannot pick a free one there", srv.Host, joinHostPort(srv.Host, 10809))
		}
		return &srv, nil
	}
	if req.PickPort {
		l, err := net.Listen("tcp", joinHostPort(srv.Host, 0))
		if err != nil {
			return nil, fmt.Errorf("--server tcp:%s: cannot find a free port on that address: %w", srv.Host, err)
		}
		srv.Port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		return &srv, nil
	}
	l, err := net.Listen("tcp", joinHostPort(srv.Host, srv.Port))
	if err != nil {
		return nil, fmt.Errorf("--server tcp:%s: port %d cannot be used (%v); pick another port, or leave it out and vbackup picks a free one",
			joinHostPort(srv.Host, srv.Port), srv.Port, err)
	}
	l.Close()
	return &srv, nil
}

// Sockets is where pull jobs' private socket folders live: Base/DOMAIN,
// on libvirtd's host: here, or Host's, reached over SSH (remote.go).
type Sockets struct {
	Base string
	Host *sshhost.Host // nil: libvirtd runs here
	// Reading says the exports of the job begun with these Sockets are
	// read at once, from here (a pull backup, not backup-begin): a
	// forward from Host is then started as the job begins (remote.go).
	Reading bool
}

// DefaultSockets is under /run when vbackup runs as root, else under
// $XDG_RUNTIME_DIR (getenv reads the environment).
func DefaultSockets(getenv func(string) string) Sockets {
	if os.Geteuid() == 0 {
		return Sockets{Base: "/run/vbackup"}
	}
	if rt := getenv("XDG_RUNTIME_DIR"); rt != "" {
		return Sockets{Base: filepath.Join(rt, "vbackup")}
	}
	return Sockets{Base: filepath.Join(os.TempDir(), fmt.Sprintf("vbackup-%d", os.Geteuid()))}
}

// socketName is the pull job's socket in its folder.
const socketName = "nbd.sock"

// dir makes the private folder for a domain's NBD socket. QEMU creates the
// socket, so the folder belongs to the user QEMU runs as.
func (s Sockets) dir(domain string, disks []virt.Disk) (string, error) {
	dir := filepath.Join(s.Base, domain)
	if err := os.MkdirAll(s.Base, 0o755); err != nil {
		return "", fmt.Errorf("making the NBD socket folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("making the NBD socket folder: %w", err)
	}
	if uid, gid, ok := qemuUser(disks); ok {
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", fmt.Errorf("handing the NBD socket folder to QEMU's user: %w", err)
		}
	}
	return dir, nil
}

// Remove removes the private folder of a domain's pull job once no job
// uses it (libvirt removes the socket when the job ends), so that the base
// does not keep a folder for every domain ever backed up. Only an empty
// folder goes: a live socket keeps it.
func (s Sockets) Remove(domain string) {
	if s.Host != nil {
		s.removeRemote(domain, false)
		return
	}
	_ = os.Remove(filepath.Join(s.Base, domain))
}

// RemoveDead is Remove for a domain whose QEMU died: its socket stayed, and
// nothing serves it.
func (s Sockets) RemoveDead(domain string) {
	if s.Host != nil {
		s.removeRemote(domain, true)
		return
	}
	_ = os.Remove(filepath.Join(s.Base, domain, socketName))
	s.Remove(domain)
}

// NBDURI is the address of one export, in the NBD URI syntax that nbdinfo,
// nbdcopy and qemu-img understand.
func NBDURI(srv xmlgen.Server, export string) string {
	scheme := "nbd"
	if srv.TLS {
		scheme = "nbds"
	}
	if srv.Socket != "" {
		return scheme + "+unix:///" + url.PathEscape(export) + "?socket=" + srv.Socket
	}
	return scheme + "://" + joinHostPort(srv.Host, srv.Port) + "/" + url.PathEscape(export)
}

// LocalURI reports whether a connection URI reaches a libvirtd on this host.
func LocalURI(uri string) bool {
	u, err := url.Parse(uri)
	return err == nil && u.Host == ""
}
