package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Conn is a connection to one export in the transmission phase. It is safe
// for concurrent use: requests from many goroutines are in flight at once
// on the one socket, and one goroutine reads the replies and hands each
// to its request by cookie.
type Conn struct {
	target     Target
	opts       Options
	export     Export
	structured bool
	contexts   []metaContext
	maxPayload uint32 // largest read or write request

	nc net.Conn
	r  *bufio.Reader

	wmu sync.Mutex // serializes writes to nc

	mu      sync.Mutex
	pending map[uint64]*request
	cookie  uint64
	err     error // why the connection is dead; nil while it lives
	closed  bool

	readerDone chan struct{}
}

// Export describes the export: its name, size, flags and block sizes.
func (c *Conn) Export() Export { return c.export }

// Target is where c is connected.
func (c *Conn) Target() Target { return c.target }

// StructuredReplies reports whether the server agreed to structured
// replies. Without them reads cannot tell holes and there is no block
// status.
func (c *Conn) StructuredReplies() bool { return c.structured }

// MetaContexts lists the metadata contexts the server granted, in the
// order it listed them.
func (c *Conn) MetaContexts() []string {
	names := make([]string, len(c.contexts))
	for i, mc := range c.contexts {
		names[i] = mc.name
	}
	return names
}

// MaxRequest is the largest length c puts in one read or write request:
// the server's maximum block size, or 32 MiB when it names none.
func (c *Conn) MaxRequest() uint32 { return c.maxPayload }

// submit registers req and sends it with payload. Once submit returns nil
// the reader goroutine completes req, whatever happens to the connection.
func (c *Conn) submit(ctx context.Context, req *request, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	c.cookie++
	req.cookie = c.cookie
	req.done = make(chan struct{})
	c.pending[req.cookie] = req
	c.mu.Unlock()

	var h [requestHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], req.flags)
	binary.BigEndian.PutUint16(h[6:], req.cmd)
	binary.BigEndian.PutUint64(h[8:], req.cookie)
	binary.BigEndian.PutUint64(h[16:], req.off)
	binary.BigEndian.PutUint32(h[24:], req.length)
	c.wmu.Lock()
	var err error
	if payload != nil {
		bufs := net.Buffers{h[:], payload}
		_, err = bufs.WriteTo(c.nc)
	} else {
		_, err = c.nc.Write(h[:])
	}
	c.wmu.Unlock()
	if err != nil {
		// Part of a request may be on the wire: the stream is lost.
		c.shutdown(fmt.Errorf("sending %s request: %w", cmdNames[req.cmd], err))
	}
	return nil
}

// wait waits for req's reply. When ctx ends first the request is
// abandoned: its reply, when it comes, is read and dropped, and its buffer
// is no longer written to. Abandoning waits for a data chunk already being
// copied into the buffer, which a server that stalls mid-chunk can make
// last until Close.
func (c *Conn) wait(ctx context.Context, req *request) error {
	select {
	case <-req.done:
		return req.err
	case <-ctx.Done():
		req.abandon()
		return ctx.Err()
	}
}

func (c *Conn) lookup(cookie uint64) *request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

func (c *Conn) finish(req *request) {
	c.mu.Lock()
	delete(c.pending, req.cookie)
	c.mu.Unlock()
	close(req.done)
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	p := replyParser{r: c.r, structured: c.structured, lookup: c.lookup, finish: c.finish}
	// A server shutting down wants the client to disconnect: Close lets
	// it answer what is in flight, and later requests fail with ErrClosed.
	var once sync.Once
	p.shutdown = func() { once.Do(func() { go c.Close() }) }
	for _, mc := range c.contexts {
		p.contexts = append(p.contexts, mc.id)
	}
	for {
		if err := p.next(); err != nil {
			c.fail(err)
			return
		}
	}
}

// shutdown drops the connection for cause; the reader then fails every
// pending request.
func (c *Conn) shutdown(cause error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = cause
	}
	c.mu.Unlock()
	c.nc.Close()
}

// fail is the reader's end: it records why the connection died and fails
// every request still pending.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		if c.closed && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
			err = ErrClosed
		} else if errors.Is(err, io.EOF) {
			err = fmt.Errorf("server closed the connection: %w", err)
		}
		c.err = err
	}
	cause := c.err
	reqs := c.pending
	c.pending = map[uint64]*request{}
	c.mu.Unlock()
	c.nc.Close()
	for _, req := range reqs {
		req.err = fmt.Errorf("%w: %w", ErrDisconnected, cause)
		close(req.done)
	}
}

// Close ends the session: it sends NBD_CMD_DISC, lets the server answer
// the requests still in flight (up to Options.CloseTimeout) and closes
// the socket. Requests started after Close fail with ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.readerDone
		return nil
	}
	c.closed = true
	alive := c.err == nil
	c.cookie++
	cookie := c.cookie
	c.mu.Unlock()
	timeout := c.opts.CloseTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if alive {
		var h [requestHeaderLen]byte
		binary.BigEndian.PutUint32(h[0:], magicRequest)
		binary.BigEndian.PutUint16(h[6:], cmdDisc)
		binary.BigEndian.PutUint64(h[8:], cookie)
		c.nc.SetWriteDeadline(time.Now().Add(timeout))
		c.wmu.Lock()
		_, err := c.nc.Write(h[:])
		c.wmu.Unlock()
		if err == nil {
			c.nc.SetReadDeadline(time.Now().Add(timeout))
			<-c.readerDone
		}
	}
	c.nc.Close()
	<-c.readerDone
	return nil
}
