package sshhost

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// forwardWait is how long ssh may take to log in and listen.
const forwardWait = 30 * time.Second

// Forward is an ssh process that forwards a unix socket here (Local) to
// one on the host: every connection to Local is a channel of the one SSH
// connection, so nothing listens on the host's network.
type Forward struct {
	Local string
	dir   string
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
}

// Forward starts forwarding a new local socket to the host's socket
// remote, or takes the one Prepare started. It returns once the local
// socket listens; Close ends it.
func (h *Host) Forward(ctx context.Context, remote string) (*Forward, error) {
	if e := h.prepared(remote); e != nil {
		select {
		case <-e.ready:
			if e.f == nil {
				return nil, e.err
			}
			select {
			case <-e.f.done:
				// Its ssh ended before the job was read (the connection
				// dropped): a forward of its own instead.
				e.f.Close()
			default:
				return e.f, nil
			}
		case <-ctx.Done():
			go func() {
				<-e.ready
				if e.f != nil {
					e.f.Close()
				}
			}()
			return nil, context.Cause(ctx)
		}
	}
	return h.startForward(ctx, remote)
}

func (h *Host) startForward(ctx context.Context, remote string) (*Forward, error) {
	dir, err := os.MkdirTemp("", "vbackup-ssh-")
	if err != nil {
		return nil, fmt.Errorf("a folder for the forwarded socket: %w", err)
	}
	local := filepath.Join(dir, "nbd.sock")
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	opts := append([]string{"-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
		"-o", "ServerAliveInterval=15", "-L", local + ":" + remote}, h.cipherOpts(ctx)...)
	cmd := h.command(fctx, opts, "")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		stop()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("running %s: %w", h.Binary, err)
	}
	f := &Forward{Local: local, dir: dir, stop: stop, done: make(chan struct{})}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(f.done) }()
	deadline := time.NewTimer(forwardWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(local); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return f, nil
		}
		select {
		case <-f.done:
			f.Close()
			msg := stderr.String()
			if strings.Contains(msg, "forwarding failed") || strings.Contains(msg, "cannot listen") {
				return nil, fmt.Errorf("SSH to %s could not forward %s: %s", h.Where(), remote, said(msg))
			}
			return nil, h.refused(msg, waitErr)
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-deadline.C:
			f.Close()
			return nil, fmt.Errorf("SSH to %s: the forward of %s did not listen within %s (ssh said: %s)", h.Where(), remote, forwardWait, said(stderr.String()))
		case <-tick.C:
		}
	}
}

// Close ends the forward and removes its local socket.
func (f *Forward) Close() error {
	f.once.Do(func() {
		f.stop()
		<-f.done
		os.RemoveAll(f.dir)
	})
	return nil
}
