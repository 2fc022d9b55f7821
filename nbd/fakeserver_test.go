package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// fakeServer is a scripted NBD server for what real servers never do:
// malformed and hostile replies. It negotiates honestly, then hands each
// request to handle, which writes whatever replies it likes.
type fakeServer struct {
	size       uint64
	flags      uint16
	structured bool
	contexts   []string // granted when asked for; context i has ID i+1
	blockSize  []uint32 // min, preferred, max; nil sends none
	handle     func(w io.Writer, r fakeRequest)

	mu   sync.Mutex
	reqs []fakeRequest
}

type fakeRequest struct {
	flags, typ  uint16
	cookie, off uint64
	length      uint32
}

func (f *fakeServer) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// start listens on a Unix socket and returns the URI of its export "vda".
func (f *fakeServer) start(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go f.serve(c)
		}
	}()
	return Target{Network: "unix", Address: sock, Export: "vda"}.String()
}

func (f *fakeServer) serve(c net.Conn) {
	defer c.Close()
	be := binary.BigEndian
	w := func(b []byte) { c.Write(b) }
	optReply := func(opt, typ uint32, data []byte) {
		b := be.AppendUint64(nil, magicOptReply)
		b = be.AppendUint32(b, opt)
		b = be.AppendUint32(b, typ)
		b = be.AppendUint32(b, uint32(len(data)))
		w(append(b, data...))
	}
	b := be.AppendUint64(nil, magicNBD)
	b = be.AppendUint64(b, magicIHaveOpt)
	w(be.AppendUint16(b, flagFixedNewstyle|flagNoZeroes))
	var h [16]byte
	if _, err := io.ReadFull(c, h[:4]); err != nil {
		return
	}
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		opt := be.Uint32(h[8:])
		data := make([]byte, be.Uint32(h[12:]))
		if _, err := io.ReadFull(c, data); err != nil {
			return
		}
		switch {
		case opt == optStructured && f.structured:
			optReply(opt, repAck, nil)
		case opt == optSetMetaContext && f.structured:
			for i, name := range f.contexts {
				if slices.Contains(metaQueries(data), name) {
					optReply(opt, repMetaContext, append(be.AppendUint32(nil, uint32(i+1)), name...))
				}
			}
			optReply(opt, repAck, nil)
		case opt == optGo:
			info := be.AppendUint16(nil, infoExport)
			info = be.AppendUint64(info, f.size)
			optReply(opt, repInfo, be.AppendUint16(info, f.flags|uint16(FlagHasFlags)))
			if f.blockSize != nil {
				info = be.AppendUint16(nil, infoBlockSize)
				for _, v := range f.blockSize {
					info = be.AppendUint32(info, v)
				}
				optReply(opt, repInfo, info)
			}
			optReply(opt, repAck, nil)
			f.transmit(c)
			return
		case opt == optAbort:
			optReply(opt, repAck, nil)
			return
		default:
			optReply(opt, repErrUnsup, nil)
		}
	}
}

func metaQueries(data []byte) []string {
	be := binary.BigEndian
	data = data[4+be.Uint32(data):]
	n := be.Uint32(data)
	data = data[4:]
	var qs []string
	for range n {
		l := be.Uint32(data)
		qs = append(qs, string(data[4:4+l]))
		data = data[4+l:]
	}
	return qs
}

func (f *fakeServer) transmit(c net.Conn) {
	be := binary.BigEndian
	var h [requestHeaderLen]byte
	var wg sync.WaitGroup
	defer wg.Wait() // as a real server, answer what is in flight before hanging up
	for {
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		r := fakeRequest{flags: be.Uint16(h[4:]), typ: be.Uint16(h[6:]), cookie: be.Uint64(h[8:]),
			off: be.Uint64(h[16:]), length: be.Uint32(h[24:])}
		if r.typ == cmdWrite {
			io.CopyN(io.Discard, c, int64(r.length))
		}
		if r.typ == cmdDisc {
			return
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, r)
		f.mu.Unlock()
		wg.Go(func() { f.handle(c, r) })
	}
}

// Reply builders, for the fake server and the fuzz seeds.

func simpleReply(cookie uint64, errno uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicSimple)
	b = binary.BigEndian.AppendUint32(b, errno)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return append(b, data...)
}

func chunk(cookie uint64, flags, typ uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

func dataChunk(cookie uint64, done bool, off uint64, data []byte) []byte {
	return chunk(cookie, doneFlag(done), chunkOffsetData, append(binary.BigEndian.AppendUint64(nil, off), data...))
}

func holeChunk(cookie uint64, done bool, off uint64, n uint32) []byte {
	return chunk(cookie, doneFlag(done), chunkOffsetHole, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(nil, off), n))
}

func noneChunk(cookie uint64) []byte { return chunk(cookie, replyFlagDone, chunkNone, nil) }

func errorChunk(cookie uint64, done bool, errno uint32, msg string) []byte {
	p := binary.BigEndian.AppendUint32(nil, errno)
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	return chunk(cookie, doneFlag(done), chunkError, append(p, msg...))
}

func errorOffsetChunk(cookie uint64, done bool, errno uint32, msg string, off uint64) []byte {
	p := binary.BigEndian.AppendUint32(nil, errno)
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	p = binary.BigEndian.AppendUint64(append(p, msg...), off)
	return chunk(cookie, doneFlag(done), chunkErrorOffset, p)
}

// statusChunk: extents as (length, flags) pairs.
func statusChunk(cookie uint64, done bool, id uint32, extents ...uint32) []byte {
	p := binary.BigEndian.AppendUint32(nil, id)
	for _, v := range extents {
		p = binary.BigEndian.AppendUint32(p, v)
	}
	return chunk(cookie, doneFlag(done), chunkBlockStatus, p)
}

func doneFlag(done bool) uint16 {
	if done {
		return replyFlagDone
	}
	return 0
}
