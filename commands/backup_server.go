package commands

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"vbackup/virt"
	"vbackup/xmlgen"
)

// serverFlag is --server as typed: tcp:HOST without a port is allowed here
// (a free port is picked when the job starts), though libvirt 9.0 wants one.
type serverFlag struct {
	spec     xmlgen.Server
	pickPort bool
}

func parseServerFlag(s string, tls bool) (serverFlag, error) {
	if host, ok := strings.CutPrefix(s, "tcp:"); ok && !hasPort(host) {
		probe, err := xmlgen.ParseServer("tcp:" + joinHostPort(host, 1))
		if err != nil {
			return serverFlag{}, err
		}
		probe.Port, probe.TLS = 0, tls
		return serverFlag{spec: probe, pickPort: true}, nil
	}
	srv, err := xmlgen.ParseServer(s)
	if err != nil {
		return serverFlag{}, err
	}
	srv.TLS = tls
	return serverFlag{spec: srv}, nil
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
func prepareServer(env *Env, domain string, disks []virt.Disk, f *serverFlag, set, insecure, local bool) (*xmlgen.Server, error) {
	if !set {
		dir, err := socketDir(env, domain, disks)
		if err != nil {
			return nil, err
		}
		sock := filepath.Join(dir, socketName)
		// No job runs (checked before): a socket left there is stale.
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return &xmlgen.Server{Socket: sock, TLS: f.spec.TLS}, nil
	}
	srv := f.spec
	if srv.Socket != "" {
		if _, err := os.Stat(srv.Socket); err == nil {
			return nil, fmt.Errorf("--server unix:%s: a file is already there; remove it or pick another path", srv.Socket)
		}
		return &srv, nil
	}
	if ip := net.ParseIP(strings.Trim(srv.Host, "[]")); !srv.TLS && !insecure && (ip == nil || !ip.IsLoopback()) && srv.Host != "localhost" {
		return nil, fmt.Errorf("--server tcp:%s would serve the disks unencrypted to the network; add --tls, or --insecure if that is what you want", srv.Host)
	}
	if !local {
		if f.pickPort {
			return nil, fmt.Errorf("--server tcp:%s: give a port (tcp:%s): libvirtd is on another host, so vbackup cannot pick a free one there", srv.Host, joinHostPort(srv.Host, 10809))
		}
		return &srv, nil
	}
	if f.pickPort {
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

// socketDir is a private folder for a domain's NBD socket: under /run when
// vbackup runs as root, else under $XDG_RUNTIME_DIR. QEMU creates the socket,
// so the folder belongs to the user QEMU runs as: the owner of the domain's
// disk images.
func socketDir(env *Env, domain string, disks []virt.Disk) (string, error) {
	base := socketBase(env)
	dir := filepath.Join(base, domain)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("making the NBD socket folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("making the NBD socket folder: %w", err)
	}
	if os.Geteuid() == 0 {
		for _, d := range disks {
			if fi, err := os.Stat(d.Source); err == nil && d.Type == "file" {
				st := fi.Sys().(*syscall.Stat_t)
				if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
					return "", fmt.Errorf("handing the NBD socket folder to QEMU's user: %w", err)
				}
				break
			}
		}
	}
	return dir, nil
}

// removeSocketDir removes the private folder socketDir makes for a
// domain's pull job, once no job uses it (libvirt removes the socket when
// the job ends), so that /run/vbackup does not keep a folder for every
// domain ever backed up. Only an empty folder goes: a live socket keeps it.
func removeSocketDir(env *Env, domain string) {
	_ = os.Remove(filepath.Join(socketBase(env), domain))
}

// removeDeadSocketDir is removeSocketDir for a domain whose QEMU died: its
// socket stayed, and nothing serves it.
func removeDeadSocketDir(env *Env, domain string) {
	_ = os.Remove(filepath.Join(socketBase(env), domain, socketName))
	removeSocketDir(env, domain)
}

// socketName is the pull job's socket in its folder.
const socketName = "nbd.sock"

// socketBase holds the socket folders of pull jobs.
func socketBase(env *Env) string {
	if os.Geteuid() == 0 {
		return "/run/vbackup"
	}
	if rt := env.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		return filepath.Join(rt, "vbackup")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("vbackup-%d", os.Geteuid()))
}

// nbdURI is the address of one export, in the NBD URI syntax that nbdinfo,
// nbdcopy and qemu-img understand.
func nbdURI(srv xmlgen.Server, export string) string {
	scheme := "nbd"
	if srv.TLS {
		scheme = "nbds"
	}
	if srv.Socket != "" {
		return scheme + "+unix:///" + url.PathEscape(export) + "?socket=" + srv.Socket
	}
	return scheme + "://" + joinHostPort(srv.Host, srv.Port) + "/" + url.PathEscape(export)
}

// localURI reports whether a connection URI reaches a libvirtd on this host.
func localURI(uri string) bool {
	u, err := url.Parse(uri)
	return err == nil && u.Host == ""
}
