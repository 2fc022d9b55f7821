package qsd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Export is one NBD export: a chain under a name.
type Export struct {
	Name  string
	Image Image
}

// NBDRequest is an NBD server over some chains, all read-only.
type NBDRequest struct {
	Exports []Export
	Socket  string // a unix socket path, or
	Host    string // a TCP address to listen on
	Port    int
	TLSDir  string // with TCP: QEMU's x509 folder (ca-cert.pem, server-cert.pem, server-key.pem); "" for none
	// VerifyPeer makes the server ask clients for a certificate of the CA.
	VerifyPeer bool
}

// NBD is a running server; it stops when this process dies.
type NBD struct {
	cmd     *exec.Cmd
	log     *strings.Builder
	logMu   sync.Mutex
	exited  chan struct{}
	waitErr error
	once    sync.Once
	stopErr error
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 16<<10 {
		w.b.Write(p)
	}
	return len(p), nil
}

// StartNBD starts the server and returns once it listens.
func StartNBD(ctx context.Context, req NBDRequest) (*NBD, error) {
	if _, err := exec.LookPath(Binary); err != nil {
		return nil, fmt.Errorf("%w (install QEMU's qemu-system-common package)", err)
	}
	var args, exports []string
	for i, e := range req.Exports {
		if err := checkPath(e.Image.Path); err != nil {
			return nil, err
		}
		if strings.ContainsAny(e.Name, ",\n") || e.Name == "" {
			return nil, fmt.Errorf("export name %q cannot be given to qemu-storage-daemon", e.Name)
		}
		node := fmt.Sprintf("disk%d", i)
		args = append(args, blockdevs(e.Image, node)...)
		exports = append(exports, "--export", opts("type=nbd", "id=export"+strconv.Itoa(i), "node-name="+node, "name="+e.Name, "writable=off", "allocation-depth=on"))
	}
	server := []string{}
	switch {
	case req.Socket != "":
		if err := checkPath(req.Socket); err != nil {
			return nil, err
		}
		server = append(server, "addr.type=unix", "addr.path="+req.Socket)
	default:
		server = append(server, "addr.type=inet", "addr.host="+strings.Trim(req.Host, "[]"), "addr.port="+strconv.Itoa(req.Port))
	}
	if req.TLSDir != "" {
		if err := checkPath(req.TLSDir); err != nil {
			return nil, err
		}
		verify := "off"
		if req.VerifyPeer {
			verify = "on"
		}
		args = append(args, "--object", opts("tls-creds-x509", "id=tls0", "endpoint=server", "dir="+req.TLSDir, "verify-peer="+verify))
		server = append(server, "tls-creds=tls0")
	}
	// More clients than the default one: nbdcopy opens several connections.
	server = append(server, "max-connections=16")
	// The exports name the server: it comes first.
	args = append(args, "--nbd-server", opts(server...))
	args = append(args, exports...)
	s := &NBD{log: &strings.Builder{}, exited: make(chan struct{})}
	s.cmd = exec.Command(Binary, args...)
	s.cmd.Stdout = lockedWriter{&s.logMu, s.log}
	s.cmd.Stderr = s.cmd.Stdout
	// Pdeathsig: a vbackup killed outright must not leave the chain served.
	// Setpgid: Ctrl-C is vbackup's to handle, which then stops the server.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	started := make(chan error, 1)
	// Pdeathsig fires when the forking thread exits: a fresh goroutine is
	// never locked to its thread, so Go keeps that thread.
	go func() { started <- s.cmd.Start() }()
	if err := <-started; err != nil {
		return nil, err
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.awaitListening(ctx, req); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *NBD) text() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.log.Len() == 0 {
		return "(no message)"
	}
	return strings.TrimSpace(s.log.String())
}

// awaitListening waits until the server takes connections. The daemon
// opens every image before it listens, so a connection means the exports
// are there.
func (s *NBD) awaitListening(ctx context.Context, req NBDRequest) error {
	network, addr := "unix", req.Socket
	if req.Socket == "" {
		network, addr = "tcp", net.JoinHostPort(strings.Trim(req.Host, "[]"), strconv.Itoa(req.Port))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited (%v): %s", Binary, s.waitErr, s.text())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s is not listening on %s after 30s: %s", Binary, addr, s.text())
			}
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Exited is closed when the server stops by itself.
func (s *NBD) Exited() <-chan struct{} { return s.exited }

// Err says why the server stopped by itself.
func (s *NBD) Err() error {
	return fmt.Errorf("%s stopped (%v): %s", Binary, s.waitErr, s.text())
}

// Stop ends the server; later calls return what the first did.
func (s *NBD) Stop() error {
	s.once.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			s.cmd.Process.Kill()
			<-s.exited
			s.stopErr = fmt.Errorf("%s did not exit within %v of SIGTERM and was killed", Binary, stopTimeout)
		}
	})
	return s.stopErr
}
