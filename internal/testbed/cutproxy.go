package testbed

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// CutProxy is a proxy of a Unix socket (an NBD server's, say) on a socket
// of its own that closes, from the server's side, the connections it
// holds once they have sent CutAfter bytes to their clients, Cuts times
// over; connections made after the last cut pass untouched. Made counts
// the cuts made.
type CutProxy struct {
	Sock     string
	target   string
	cutAfter int64
	cuts     atomic.Int32 // cuts left to make
	made     atomic.Int32

	mu    sync.Mutex
	conns []net.Conn // of the current round, both sides
	sent  int64      // server to clients, this round
}

// NewCutProxy listens on a new socket in t's temporary folder (or at sock,
// when not ""), in front of target, until t ends.
func NewCutProxy(t testing.TB, sock, target string, cutAfter int64, cuts int32) *CutProxy {
	t.Helper()
	if sock == "" {
		sock = filepath.Join(t.TempDir(), "proxy.sock")
	}
	c := &CutProxy{Sock: sock, target: target, cutAfter: cutAfter}
	c.cuts.Store(cuts)
	l, err := net.Listen("unix", c.Sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			go c.serve(client)
		}
	}()
	return c
}

// Made is how many times the proxy cut its connections.
func (c *CutProxy) Made() int { return int(c.made.Load()) }

func (c *CutProxy) serve(client net.Conn) {
	server, err := net.Dial("unix", c.target)
	if err != nil {
		client.Close()
		return
	}
	cutting := c.cuts.Load() > 0
	if cutting {
		c.mu.Lock()
		c.conns = append(c.conns, client, server)
		c.mu.Unlock()
	}
	go func() { io.Copy(server, client); server.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
			if cutting {
				c.count(int64(n))
			}
		}
		if err != nil {
			break
		}
	}
	client.Close()
}

// count adds what a connection of the round sent, and cuts the round once
// it is past cutAfter.
func (c *CutProxy) count(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent += n
	if c.sent < c.cutAfter || len(c.conns) == 0 {
		return
	}
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns, c.sent = nil, 0
	c.cuts.Add(-1)
	c.made.Add(1)
}
