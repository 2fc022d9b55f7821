package nbd

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"
)

var (
	// ErrProtocol marks a violation of the protocol by the server. The
	// connection is dropped when one is seen, so every request pending on
	// it fails too.
	ErrProtocol = errors.New("nbd: protocol error")
	// ErrDisconnected marks a request that failed because its connection
	// was lost (or closed) before the server answered it.
	ErrDisconnected = errors.New("nbd: connection lost")
	// ErrClosed is returned for requests started after Close.
	ErrClosed = errors.New("nbd: connection closed")
	// ErrTLSRequired is returned by Dial when the server wants TLS and the
	// URI did not ask for it (use nbds:// or nbds+unix://).
	ErrTLSRequired = errors.New("nbd: server requires TLS")
	// ErrUnsupported is returned for an operation the server or this
	// connection does not support (block status without metadata
	// contexts, a TLS type other than x509, ...).
	ErrUnsupported = errors.New("nbd: not supported")
	// ErrReadOnly is returned, without asking the server, for a write to
	// an export the server marked read-only.
	ErrReadOnly = errors.New("nbd: export is read-only")
)

// Errno is an error value sent by the server.
type Errno uint32

// The error values the protocol defines.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

var errnoNames = map[Errno]string{
	EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
	ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP", ESHUTDOWN: "ESHUTDOWN",
}

func (e Errno) Error() string {
	if s, ok := errnoNames[e]; ok {
		return s
	}
	return "error " + strconv.FormatUint(uint64(e), 10)
}

// Is lets errors.Is(err, syscall.EIO) match the server's EIO, since the
// protocol's values were chosen to be Linux's.
func (e Errno) Is(target error) bool {
	if t, ok := target.(syscall.Errno); ok {
		return uint32(t) == uint32(e)
	}
	return false
}

// ServerError is an error the server reported for a request: its error
// value, the message it sent if any, and the offset it named if any.
type ServerError struct {
	Errno     Errno
	Message   string
	Offset    uint64
	HasOffset bool
}

func (e *ServerError) Error() string {
	s := e.Errno.Error()
	if e.HasOffset {
		s += " at offset " + strconv.FormatUint(e.Offset, 10)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *ServerError) Unwrap() error { return e.Errno }

// Error is the error of one request: which export, which operation and
// range, and why (a *ServerError, ErrDisconnected, ErrProtocol, a
// context's error, ...).
type Error struct {
	Export string
	Op     string // "read", "write", "write zeroes", "trim", "flush", "block status"
	Offset uint64
	Length uint64
	Err    error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nbd: export %q: %s", e.Export, e.Op)
	if e.Op != "flush" {
		s += fmt.Sprintf(" at offset %d (%d bytes)", e.Offset, e.Length)
	}
	return s + ": " + trimPrefix(e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// trimPrefix drops the "nbd: " of a wrapped sentinel so that a message
// names the package once.
func trimPrefix(err error) string {
	s := err.Error()
	if len(s) > 5 && s[:5] == "nbd: " {
		return s[5:]
	}
	return s
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// optionError is a refusal of an option during the handshake.
type optionError struct {
	opt     uint32
	reply   uint32
	message string
}

func (e *optionError) Error() string {
	name, ok := repErrNames[e.reply]
	if !ok {
		name = fmt.Sprintf("error %#x", e.reply)
	}
	s := fmt.Sprintf("server refused %s: %s", optNames[e.opt], name)
	if e.message != "" {
		s += ": " + e.message
	}
	return s
}

func (e *optionError) Is(target error) bool {
	switch target {
	case ErrTLSRequired:
		return e.reply == repErrTLSReqd
	case ErrUnsupported:
		return e.reply == repErrUnsup
	}
	return false
}
