package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Export describes the export a connection is attached to.
type Export struct {
	Name        string // as asked for in the URI
	Description string // NBD_INFO_DESCRIPTION, if the server sent one
	Size        uint64
	Flags       Flags
	BlockSize   BlockSize
}

// BlockSize holds the server's block size constraints (NBD_INFO_BLOCK_SIZE).
// When the server sends none (Advertised false) they are the protocol's
// defaults as a client should assume them: Min 1, Preferred 4096, and Max
// 32 MiB.
type BlockSize struct {
	Min, Preferred, Max uint32
	Advertised          bool
}

// Flags are the export's transmission flags.
type Flags uint16

func (f Flags) ReadOnly() bool       { return f&FlagReadOnly != 0 }
func (f Flags) CanFlush() bool       { return f&FlagSendFlush != 0 }
func (f Flags) CanFUA() bool         { return f&FlagSendFUA != 0 }
func (f Flags) CanTrim() bool        { return f&FlagSendTrim != 0 }
func (f Flags) CanWriteZeroes() bool { return f&FlagSendWriteZeroes != 0 }
func (f Flags) CanMultiConn() bool   { return f&FlagCanMultiConn != 0 }
func (f Flags) CanCache() bool       { return f&FlagSendCache != 0 }
func (f Flags) CanFastZero() bool    { return f&FlagSendFastZero != 0 }
func (f Flags) Rotational() bool     { return f&FlagRotational != 0 }

type metaContext struct {
	id   uint32
	name string
}

// session is one connection during option haggling.
type session struct {
	nc         net.Conn
	r          *bufio.Reader
	export     Export
	structured bool
	contexts   []metaContext
	noZeroes   bool
}

var longAgo = time.Unix(1, 0)

// negotiate runs the fixed newstyle handshake up to the transmission phase
// (goTransmission) or up to the options it needs (for Info and
// ListMetaContexts, which then abort). ctx bounds the whole handshake.
func negotiate(ctx context.Context, nc net.Conn, t Target, opts Options, body func(*session) error) (*session, error) {
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(longAgo) })
	s := &session{nc: nc, r: bufio.NewReaderSize(nc, readBuffer)}
	s.export.Name = t.Export
	err := s.run(ctx, t, opts, body)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		var oe *optionError
		if errors.As(err, &oe) {
			s.abort()
		}
		s.nc.Close()
		return nil, fmt.Errorf("nbd: export %q: handshake: %w", t.Export, err)
	}
	s.nc.SetDeadline(time.Time{})
	return s, nil
}

func (s *session) run(ctx context.Context, t Target, opts Options, body func(*session) error) error {
	if err := s.greet(); err != nil {
		return err
	}
	cfg, err := t.tlsConfig(opts.TLS)
	if err != nil {
		return err
	}
	if cfg != nil {
		if err := s.startTLS(ctx, cfg); err != nil {
			return err
		}
	}
	return body(s)
}

func (s *session) greet() error {
	var b [18]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		return fmt.Errorf("reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(b[0:]) != magicNBD {
		return protocolErrorf("not an NBD server (greeting %q)", b[:8])
	}
	switch binary.BigEndian.Uint64(b[8:]) {
	case magicIHaveOpt:
	case magicOldstyle:
		return fmt.Errorf("%w: oldstyle negotiation", ErrUnsupported)
	default:
		return protocolErrorf("bad magic %#x after NBDMAGIC", b[8:16])
	}
	hflags := binary.BigEndian.Uint16(b[16:])
	if hflags&flagFixedNewstyle == 0 {
		return fmt.Errorf("%w: server lacks fixed newstyle negotiation", ErrUnsupported)
	}
	cflags := uint32(flagCFixedNewstyle)
	if hflags&flagNoZeroes != 0 {
		cflags |= flagCNoZeroes
		s.noZeroes = true
	}
	return s.write(binary.BigEndian.AppendUint32(nil, cflags))
}

func (s *session) write(b []byte) error {
	_, err := s.nc.Write(b)
	return err
}

func (s *session) sendOption(opt uint32, data []byte) error {
	b := make([]byte, 0, 16+len(data))
	b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return s.write(append(b, data...))
}

// reply reads one option reply to opt. A reply of an error type is
// returned as an *optionError.
func (s *session) reply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(s.r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("reading reply to %s: %w", optNames[opt], err)
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		return 0, nil, protocolErrorf("bad option reply magic %#x", h[:8])
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != opt {
		return 0, nil, protocolErrorf("reply to option %d while %s was asked", got, optNames[opt])
	}
	typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if n > maxOptionReply {
		return 0, nil, protocolErrorf("option reply of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(s.r, data); err != nil {
		return 0, nil, fmt.Errorf("reading reply to %s: %w", optNames[opt], err)
	}
	if typ&repErrBit != 0 {
		return typ, nil, &optionError{opt: opt, reply: typ, message: string(data)}
	}
	return typ, data, nil
}

// simpleOption sends an option whose only good answer is one NBD_REP_ACK.
func (s *session) simpleOption(opt uint32) error {
	if err := s.sendOption(opt, nil); err != nil {
		return err
	}
	typ, _, err := s.reply(opt)
	if err == nil && typ != repAck {
		err = protocolErrorf("reply type %d to %s", typ, optNames[opt])
	}
	return err
}

func (s *session) startTLS(ctx context.Context, cfg *tls.Config) error {
	if err := s.simpleOption(optStartTLS); err != nil {
		return fmt.Errorf("TLS was asked for: %w", err)
	}
	if s.r.Buffered() != 0 {
		return protocolErrorf("data after the STARTTLS reply")
	}
	tc := tls.Client(s.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	s.nc = tc
	s.r = bufio.NewReaderSize(tc, readBuffer)
	return nil
}

// structuredReplies asks for structured replies; a server that refuses
// them is still usable, with simple replies and no block status.
func (s *session) structuredReplies() error {
	err := s.simpleOption(optStructured)
	var oe *optionError
	if errors.As(err, &oe) && oe.reply != repErrTLSReqd && oe.reply != repErrShutdown {
		return nil
	}
	s.structured = err == nil
	return err
}

func metaContextData(export string, queries []string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// metaContexts sends NBD_OPT_SET_META_CONTEXT or NBD_OPT_LIST_META_CONTEXT
// and returns the contexts of the replies.
func (s *session) metaContexts(opt uint32, queries []string) ([]metaContext, error) {
	if err := s.sendOption(opt, metaContextData(s.export.Name, queries)); err != nil {
		return nil, err
	}
	var got []metaContext
	for {
		typ, data, err := s.reply(opt)
		if err != nil {
			return nil, err
		}
		switch typ {
		case repAck:
			return got, nil
		case repMetaContext:
			if len(data) < 4 {
				return nil, protocolErrorf("meta context reply of %d bytes", len(data))
			}
			got = append(got, metaContext{binary.BigEndian.Uint32(data), string(data[4:])})
		default:
			return nil, protocolErrorf("reply type %d to %s", typ, optNames[opt])
		}
	}
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and records what the server says
// of the export. A server that knows neither is asked with
// NBD_OPT_EXPORT_NAME when opt is NBD_OPT_GO.
func (s *session) info(opt uint32) error {
	name := s.export.Name
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, 3)
	for _, i := range []uint16{infoBlockSize, infoName, infoDescription} {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	if err := s.sendOption(opt, b); err != nil {
		return err
	}
	sawExport := false
	for {
		typ, data, err := s.reply(opt)
		var oe *optionError
		if errors.As(err, &oe) && oe.reply == repErrUnsup && opt == optGo {
			return s.exportName()
		}
		if err != nil {
			return err
		}
		switch typ {
		case repAck:
			if !sawExport {
				return protocolErrorf("%s succeeded without NBD_INFO_EXPORT", optNames[opt])
			}
			return s.checkBlockSize()
		case repInfo:
			if err := s.infoReply(data, &sawExport); err != nil {
				return err
			}
		default:
			return protocolErrorf("reply type %d to %s", typ, optNames[opt])
		}
	}
}

func (s *session) infoReply(data []byte, sawExport *bool) error {
	if len(data) < 2 {
		return protocolErrorf("NBD_REP_INFO of %d bytes", len(data))
	}
	typ, d := binary.BigEndian.Uint16(data), data[2:]
	switch typ {
	case infoExport:
		if len(d) != 10 {
			return protocolErrorf("NBD_INFO_EXPORT of %d bytes", len(data))
		}
		s.export.Size = binary.BigEndian.Uint64(d)
		s.export.Flags = Flags(binary.BigEndian.Uint16(d[8:]))
		*sawExport = true
	case infoBlockSize:
		if len(d) != 12 {
			return protocolErrorf("NBD_INFO_BLOCK_SIZE of %d bytes", len(data))
		}
		s.export.BlockSize = BlockSize{
			Min:        binary.BigEndian.Uint32(d),
			Preferred:  binary.BigEndian.Uint32(d[4:]),
			Max:        binary.BigEndian.Uint32(d[8:]),
			Advertised: true,
		}
	case infoDescription:
		s.export.Description = string(d)
	}
	return nil
}

func (s *session) checkBlockSize() error {
	bs := &s.export.BlockSize
	if !bs.Advertised {
		*bs = BlockSize{Min: 1, Preferred: 4096, Max: defaultMaxPayload}
		return nil
	}
	pow2 := func(v uint32) bool { return v != 0 && v&(v-1) == 0 }
	if !pow2(bs.Min) || bs.Min > 64<<10 {
		return protocolErrorf("minimum block size %d is not a power of 2 up to 64 KiB", bs.Min)
	}
	if bs.Max < bs.Min || (bs.Max%bs.Min != 0 && bs.Max != 0xffffffff) {
		return protocolErrorf("maximum block size %d does not fit minimum %d", bs.Max, bs.Min)
	}
	if !pow2(bs.Preferred) || bs.Preferred < bs.Min {
		bs.Preferred = max(bs.Min, 4096)
	}
	return nil
}

// exportName enters transmission with the old NBD_OPT_EXPORT_NAME, for
// servers that lack NBD_OPT_GO.
func (s *session) exportName() error {
	if err := s.sendOption(optExportName, []byte(s.export.Name)); err != nil {
		return err
	}
	var b [10]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		return fmt.Errorf("server refused export (NBD_OPT_EXPORT_NAME): %w", err)
	}
	s.export.Size = binary.BigEndian.Uint64(b[:])
	s.export.Flags = Flags(binary.BigEndian.Uint16(b[8:]))
	if !s.noZeroes {
		if _, err := s.r.Discard(124); err != nil {
			return err
		}
	}
	return s.checkBlockSize()
}

// abort ends option haggling politely (NBD_OPT_ABORT), not waiting long
// for the server's answer.
func (s *session) abort() {
	s.nc.SetDeadline(time.Now().Add(time.Second))
	if s.sendOption(optAbort, nil) == nil {
		s.reply(optAbort)
	}
}

// readBuffer is the size of a connection's read buffer. A read's payload
// larger than what is buffered goes straight from the socket into the
// caller's buffer, so a small buffer copies little (at 256 KiB, copying
// out of it took 5 % of a fetch's samples).
const readBuffer = 4 << 10
