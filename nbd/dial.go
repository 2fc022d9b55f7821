package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Options tune Dial.
type Options struct {
	// MetaContexts to select with NBD_OPT_SET_META_CONTEXT, e.g.
	// "base:allocation", "qemu:dirty-bitmap:backup-vda". The ones the
	// server grants are listed by Conn.MetaContexts; asking for one it
	// lacks is not an error until BlockStatus asks for it.
	MetaContexts []string
	// TLS configures TLS. It is used for nbds:// and nbds+unix:// URIs
	// (with the URI's tls-* parameters applied over it) and, when set,
	// makes TLS required for nbd:// and nbd+unix:// URIs too.
	TLS *tls.Config
	// CloseTimeout bounds how long Close waits for the server to answer
	// requests still in flight and hang up; 0 means 30 seconds.
	CloseTimeout time.Duration
}

// Dial connects to the export an NBD URI names (see ParseURI) and
// negotiates: TLS when the URI or opts ask for it, structured replies,
// opts.MetaContexts, then NBD_OPT_GO with block size constraints. ctx
// bounds the dial and the handshake only.
func Dial(ctx context.Context, uri string, opts Options) (*Conn, error) {
	t, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return DialTarget(ctx, t, opts)
}

// DialTarget is Dial for a parsed URI.
func DialTarget(ctx context.Context, t Target, opts Options) (*Conn, error) {
	nc, err := dialSocket(ctx, t)
	if err != nil {
		return nil, err
	}
	s, err := negotiate(ctx, nc, t, opts, func(s *session) error {
		if err := s.structuredReplies(); err != nil {
			return err
		}
		if s.structured && len(opts.MetaContexts) > 0 {
			ctxs, err := s.metaContexts(optSetMetaContext, opts.MetaContexts)
			var oe *optionError
			if errors.As(err, &oe) && oe.reply != repErrTLSReqd && oe.reply != repErrShutdown {
				err = nil // the server has none of them: BlockStatus will say so
			}
			if err != nil {
				return err
			}
			s.contexts = ctxs
		}
		return s.info(optGo)
	})
	if err != nil {
		return nil, tlsHint(err, t)
	}
	c := &Conn{
		target:     t,
		opts:       opts,
		export:     s.export,
		structured: s.structured,
		contexts:   s.contexts,
		nc:         s.nc,
		r:          s.r,
		pending:    map[uint64]*request{},
		readerDone: make(chan struct{}),
	}
	c.maxPayload = defaultMaxPayload
	if bs := c.export.BlockSize; bs.Advertised && bs.Max != 0xffffffff {
		c.maxPayload = bs.Max
	}
	go c.readLoop()
	return c, nil
}

func tlsHint(err error, t Target) error {
	if errors.Is(err, ErrTLSRequired) && !t.TLS {
		return fmt.Errorf("%w (use an nbds:// or nbds+unix:// URI, or set Options.TLS)", err)
	}
	return err
}

func dialSocket(ctx context.Context, t Target) (net.Conn, error) {
	addr := t.Address
	if t.Network == "unix" && strings.HasPrefix(addr, "\x00") {
		addr = "@" + addr[1:] // Go's spelling of the abstract namespace
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, t.Network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: export %q: %w", t.Export, err)
	}
	return nc, nil
}

// Info asks the server about the export a URI names (NBD_OPT_INFO) without
// entering the transmission phase, then ends the session (NBD_OPT_ABORT).
func Info(ctx context.Context, uri string, opts Options) (Export, error) {
	var e Export
	err := optionSession(ctx, uri, opts, func(s *session) error {
		// Asked as Dial asks, so that the flags match (NBD_FLAG_SEND_DF
		// depends on structured replies).
		if err := s.structuredReplies(); err != nil {
			return err
		}
		err := s.info(optInfo)
		e = s.export
		return err
	})
	return e, err
}

// ListMetaContexts lists the metadata contexts the server offers for the
// export a URI names that match queries (NBD_OPT_LIST_META_CONTEXT); no
// query lists them all. QEMU answers "qemu:dirty-bitmap:" with its
// bitmaps.
func ListMetaContexts(ctx context.Context, uri string, opts Options, queries ...string) ([]string, error) {
	var names []string
	err := optionSession(ctx, uri, opts, func(s *session) error {
		if err := s.structuredReplies(); err != nil {
			return err
		}
		if !s.structured {
			return fmt.Errorf("%w: server refused structured replies, so has no metadata contexts", ErrUnsupported)
		}
		ctxs, err := s.metaContexts(optListMetaCtx, queries)
		for _, mc := range ctxs {
			names = append(names, mc.name)
		}
		return err
	})
	return names, err
}

func optionSession(ctx context.Context, uri string, opts Options, body func(*session) error) error {
	t, err := ParseURI(uri)
	if err != nil {
		return err
	}
	nc, err := dialSocket(ctx, t)
	if err != nil {
		return err
	}
	s, err := negotiate(ctx, nc, t, opts, body)
	if err != nil {
		return tlsHint(err, t)
	}
	s.abort()
	// The session's work is done: a server that hangs up as soon as it has
	// the abort makes closing TLS fail (its goodbye finds the socket shut),
	// which says nothing of the answers.
	s.nc.Close()
	return nil
}

// DialMulti opens up to n connections to the export a URI names, all with
// the same options: n when the server advertises NBD_FLAG_CAN_MULTI_CONN,
// else one, since the protocol then does not promise that the connections
// see each other's writes.
func DialMulti(ctx context.Context, uri string, opts Options, n int) ([]*Conn, error) {
	first, err := Dial(ctx, uri, opts)
	if err != nil {
		return nil, err
	}
	conns := []*Conn{first}
	if n <= 1 || !first.export.Flags.CanMultiConn() {
		return conns, nil
	}
	more, err := first.clones(ctx, n-1)
	if err != nil {
		first.Close()
		return nil, err
	}
	return append(conns, more...), nil
}

// Clone opens another connection to the same export with the same options.
func (c *Conn) Clone(ctx context.Context) (*Conn, error) {
	return DialTarget(ctx, c.target, c.opts)
}

func (c *Conn) clones(ctx context.Context, n int) ([]*Conn, error) {
	conns := make([]*Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = c.Clone(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}
