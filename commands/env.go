package commands

import (
	"context"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"vbackup/sshhost"
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
	// Signals delivers Ctrl-C (and SIGTERM) until stop is called.
	Signals func() (ch <-chan os.Signal, stop func())
	// Width is the terminal's width in columns, for progress bars.
	Width func() int
	// Exit leaves the process at once (a second Ctrl-C).
	Exit func(code int)
	// CertDirs, when set, replaces the machine's folders searched for TLS
	// client certificates when none is given (tests set it: the folders a
	// machine happens to have must not change what a test sees).
	CertDirs func() []string

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
		Signals: func() (<-chan os.Signal, func()) {
			ch := make(chan os.Signal, 2)
			signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
			return ch, func() { signal.Stop(ch) }
		},
		Exit: os.Exit,
		Width: func() int {
			if w, _, err := term.GetSize(int(os.Stderr.Fd())); err == nil && w > 0 {
				return w
			}
			return 80
		},
	}
}

// Conn opens the connection the global flags name, once.
func (e *Env) Conn(ctx context.Context) (virt.Conn, error) {
	e.once.Do(func() {
		var debug io.Writer
		if e.debug {
			debug = e.Stderr
		}
		// A keyfile= that is not there is told before libvirt's ssh
		// quietly falls back to other keys.
		if _, _, e.err = sshhost.FromURI(e.openURI()); e.err != nil {
			return
		}
		e.conn, e.err = e.Open(ctx, e.uri, debug)
		e.err = explainOpen(e.openURI(), e.err)
	})
	return e.conn, e.err
}

// Reconnect drops the connection and opens it again, after libvirtd went
// away.
func (e *Env) Reconnect(ctx context.Context) (virt.Conn, error) {
	if e.conn != nil {
		_ = e.conn.Close()
	}
	var debug io.Writer
	if e.debug {
		debug = e.Stderr
	}
	e.conn, e.err = e.Open(ctx, e.uri, debug)
	return e.conn, e.err
}

// openURI is the URI the connection is opened with, as libvirt takes it.
func (e *Env) openURI() string {
	if e.uri != "" {
		return e.uri
	}
	return e.Getenv("LIBVIRT_DEFAULT_URI")
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
