package job

import (
	"context"
	"time"

	"vbackup/sshhost"
	"vbackup/virt"
	"vbackup/xmlgen"
)

// remoteWait bounds the SSH round trips that only tidy up.
const remoteWait = 30 * time.Second

// remoteServer makes the pull job's private socket folder on libvirtd's
// host: libvirt 9.0 picks no socket of its own (a pull <domainbackup>
// without <server> does not validate) and QEMU must create it there.
func (s Sockets) remoteServer(ctx context.Context, domain string, disks []virt.Disk, tls bool) (*xmlgen.Server, error) {
	image := ""
	for _, d := range disks {
		if d.Type == "file" && d.Source != "" {
			image = d.Source
			break
		}
	}
	dir, err := s.Host.SocketDir(ctx, domain, socketName, image)
	if err != nil {
		return nil, err
	}
	sock := dir + "/" + socketName
	if s.Reading {
		s.Host.Prepare(ctx, sock) // its login overlaps the job's start; Reach takes it
	}
	return &xmlgen.Server{Socket: sock, TLS: tls}, nil
}

func (s Sockets) removeRemote(domain string, dead bool) {
	s.Host.DropPrepared("/" + domain + "/" + socketName)
	ctx, cancel := context.WithTimeout(context.Background(), remoteWait)
	defer cancel()
	_ = s.Host.RemoveSocketDir(ctx, domain, socketName, dead)
}

// Remote reports whether libvirtd runs on another host, reached over SSH.
func (s Sockets) Remote() bool { return s.Host != nil }

// Reach is srv as this host reaches it: a unix socket on libvirtd's host
// comes through an SSH forward, which done ends; anything else is srv
// itself (a TCP export is reached directly).
func (s Sockets) Reach(ctx context.Context, srv xmlgen.Server) (here xmlgen.Server, done func(), err error) {
	if s.Host == nil || srv.Socket == "" {
		return srv, func() {}, nil
	}
	fw, err := s.Host.Forward(ctx, srv.Socket)
	if err != nil {
		return srv, func() {}, err
	}
	here = srv
	here.Socket = fw.Local
	return here, func() { fw.Close() }, nil
}

// SocketsFor is DefaultSockets for the libvirt connection uri: on its host
// when it goes through SSH.
func SocketsFor(uri string, getenv func(string) string) (Sockets, error) {
	s := DefaultSockets(getenv)
	h, ok, err := sshhost.FromURI(uri)
	if err != nil {
		return s, err
	}
	if ok {
		s.Host = h
	}
	return s, nil
}
