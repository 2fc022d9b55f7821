package commands

import (
	"context"
	"errors"
	"fmt"

	"vbackup/job"
	"vbackup/sshhost"
)

// sockets is where pull jobs' sockets go for the connection the global
// flags name: on libvirtd's host, through SSH, for a qemu+ssh URI.
func sockets(ctx context.Context, env *Env) (job.Sockets, error) {
	conn, err := env.Conn(ctx)
	if err != nil {
		return job.Sockets{}, err
	}
	return job.SocketsFor(conn.URI(), env.Getenv)
}

// explainOpen says why a connection over SSH could not be opened, when
// SSH refused it: libvirt's own message only quotes ssh.
func explainOpen(uri string, err error) error {
	if err == nil {
		return nil
	}
	h, ok, herr := sshhost.FromURI(uri)
	if herr != nil {
		return fmt.Errorf("%w (connecting to %s)", herr, uri)
	}
	if !ok {
		return err
	}
	var refused *sshhost.RefusedError
	if e, ok := h.Explain(err.Error()); ok && !errors.As(err, &refused) {
		return fmt.Errorf("connecting to %s: %w", h.URI, e)
	}
	return err
}
