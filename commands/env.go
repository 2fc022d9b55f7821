package commands

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"vbackup/virt"
)

// OpenFunc opens a libvirt connection; debug, when not nil, receives a line
// per libvirt call. main wires libvirtconn.Open in, so that this package
// builds without cgo.
type OpenFunc func(ctx context.Context, uri string, debug io.Writer) (virt.Conn, error)

// Env is what every command gets from outside: the standard streams, whether
// they are terminals, the environment, the clock, and a lazy connection.
// No command touches os.Stdout or opens libvirt by itself.
type Env struct {
	Stdin     io.Reader
	Stdout    io.Writer
	Stderr    io.Writer
	StdoutTTY bool
	StderrTTY bool
	Getenv    func(string) string
	Now       func() time.Time
	Open      OpenFunc

	// Set from the global flags before a command runs.
	uri   string
	debug bool

	once sync.Once
	conn virt.Conn
	err  error
}

// OSEnv is the Env of a real process.
func OSEnv(open OpenFunc) *Env {
	return &Env{
		Stdin:     os.Stdin,
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
		StdoutTTY: isTerminal(os.Stdout),
		StderrTTY: isTerminal(os.Stderr),
		Getenv:    os.Getenv,
		Now:       time.Now,
		Open:      open,
	}
}

// Conn opens the connection the global flags name, once.
func (e *Env) Conn(ctx context.Context) (virt.Conn, error) {
	e.once.Do(func() {
		var debug io.Writer
		if e.debug {
			debug = e.Stderr
		}
		e.conn, e.err = e.Open(ctx, e.uri, debug)
	})
	return e.conn, e.err
}

// close closes the connection if a command opened one.
func (e *Env) close() {
	if e.conn != nil {
		_ = e.conn.Close()
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
