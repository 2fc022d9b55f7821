package libvirtconn

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirt"

	"vbackup/virt"
)

// defaultRedialWait is how long a call waits for libvirtd to come back. A
// restart by a package upgrade takes seconds; a backup job, which QEMU goes
// on running meanwhile, is worth waiting a minute for.
const defaultRedialWait = time.Minute

// redialing is how a Conn opens itself again after libvirtd went away.
type redialing struct {
	uri  string        // as Open was given it: the same choice of daemon
	wait time.Duration // below 0: never
	// turn is held by the one call reconnecting; the others wait for it
	// as they wait for libvirtd: until their ctx ends.
	turn chan struct{}
	// dial opens the new connection; nil means replace (a test's stand-in
	// needs no daemon).
	dial func() error
	// gaveUp: the last reconnection waited in vain. The calls after it
	// (a failed backup's cleanup makes several) try once each rather than
	// waiting the whole time again. Guarded by turn.
	gaveUp bool

	mu sync.Mutex // guards fn
	fn func(virt.Redial)
}

func newRedialing(uri string, wait time.Duration) redialing {
	if wait == 0 {
		wait = defaultRedialWait
	}
	return redialing{uri: uri, wait: wait, turn: make(chan struct{}, 1)}
}

// OnRedial calls fn after each attempt to reconnect.
func (c *Conn) OnRedial(fn func(virt.Redial)) {
	c.redial.mu.Lock()
	c.redial.fn = fn
	c.redial.mu.Unlock()
}

// generation counts the connections opened before the current one.
func (c *Conn) generation() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// lost is whether the connection is gone (libvirt tells it by the socket),
// so that a failed call may be worth making again on a new one. Called
// with c.lvMu held.
func (c *Conn) lost() bool {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing || c.redial.wait < 0 {
		return false
	}
	alive, err := c.lv.IsAlive()
	return err != nil || !alive
}

// neverSent is whether libvirt refused the call before sending it: the
// connection was known closed, so libvirtd did not run it.
func neverSent(err error) bool {
	return strings.Contains(message(err), "client socket is closed")
}

// readOnly is whether the call only reads, so that making it twice is
// harmless.
func readOnly(op string) bool {
	for _, word := range []string{"Get", "Lookup", "List", "IsActive"} {
		if strings.Contains(op, word) {
			return true
		}
	}
	return false
}

// reconnect opens a new connection to the same daemon, within the bounded
// wait, and moves every domain handed out onto it, looked up again by
// UUID. gen is the connection the failed call was made on: when another
// call has reconnected since, there is nothing to do. The wait ends early,
// with ctx's cause, when ctx ends: a Ctrl-C is not held up for a minute.
func (c *Conn) reconnect(ctx context.Context, op string, cause error, gen int) error {
	select {
	case c.redial.turn <- struct{}{}:
	case <-ctx.Done():
		return cutShort(ctx, cause)
	}
	defer func() { <-c.redial.turn }()
	c.mu.Lock()
	since, now := c.lostAt, c.gen
	c.mu.Unlock()
	if now != gen {
		return nil
	}
	if since.IsZero() {
		since = time.Now()
	}
	wait := c.redial.wait
	if c.redial.gaveUp {
		wait = 0
	}
	dial := c.redial.dial
	if dial == nil {
		dial = c.replace
	}
	deadline := time.Now().Add(wait)
	pause := 100 * time.Millisecond
	for {
		err := dial()
		if err == nil {
			c.redial.gaveUp = false
			c.told(virt.Redial{Op: op, Lost: message(cause), After: time.Since(since)})
			return nil
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("libvirtd went away (%s) and did not answer again within %s: %s", message(cause), wait, message(err))
			if c.redial.gaveUp {
				msg = fmt.Sprintf("libvirtd is still away (%s): %s", message(cause), message(err))
			}
			err = &virt.Error{Op: op, Kind: virt.ErrConnect, Msg: msg}
			c.redial.gaveUp = true
			c.told(virt.Redial{Op: op, Lost: message(cause), After: time.Since(since), Err: err})
			return err
		}
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			// Not given up: the cleanup that follows, with a ctx of its
			// own, still waits for libvirtd.
			err := cutShort(ctx, cause)
			c.told(virt.Redial{Op: op, Lost: message(cause), After: time.Since(since), Err: err})
			return err
		}
		if pause < time.Second {
			pause *= 2
		}
	}
}

// cutShort is the error of a call whose ctx ended while it waited for
// libvirtd: ctx's cause (an interrupt, say), saying what was cut short.
func cutShort(ctx context.Context, cause error) error {
	return fmt.Errorf("libvirtd went away (%s), and the wait for it to answer again was cut short: %w", message(cause), context.Cause(ctx))
}

func (c *Conn) told(r virt.Redial) {
	if c.debug != nil {
		fmt.Fprintf(c.debug, "libvirt: reconnect after %s: %v\n", r.After.Round(time.Millisecond), r.Err)
	}
	c.redial.mu.Lock()
	fn := c.redial.fn
	c.redial.mu.Unlock()
	if fn != nil {
		fn(r)
	}
}

// replace opens the new connection and moves the domains onto it; on
// failure the old connection stays, for the next attempt.
func (c *Conn) replace() error {
	var lv *libvirt.Connect
	err := c.once("virConnectOpen", c.redial.uri, func() (err error) {
		lv, err = libvirt.NewConnect(c.redial.uri)
		return err
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	doms := append([]*Domain(nil), c.domains...)
	c.mu.Unlock()
	found := make([]*libvirt.Domain, len(doms))
	for i, d := range doms {
		var nd *libvirt.Domain
		lerr := c.once("virDomainLookupByUUIDString", d.uuid, func() (err error) {
			if d.uuid == "" {
				nd, err = lv.LookupDomainByName(d.name)
			} else {
				nd, err = lv.LookupDomainByUUIDString(d.uuid)
			}
			return err
		})
		// A domain gone meanwhile (a transient one that stopped) keeps
		// its old handle, whose calls fail.
		if lerr == nil {
			found[i] = nd
		}
	}
	c.lvMu.Lock()
	old := c.lv
	c.lv = lv
	var freed []*libvirt.Domain
	for i, d := range doms {
		if found[i] != nil {
			freed = append(freed, d.lv)
			d.lv = found[i]
		}
	}
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.closed, c.lostAt = false, time.Time{}
	c.mu.Unlock()
	c.watchClose(lv, gen)
	c.lvMu.Unlock()
	for _, d := range freed {
		_ = d.Free()
	}
	_ = old.UnregisterCloseCallback()
	_, _ = old.Close()
	return nil
}
