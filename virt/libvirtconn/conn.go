// Package libvirtconn is the only package of vbackup that imports libvirt's
// Go binding. It implements virt.Conn and virt.Domain, translating libvirt's
// error codes into virt's errors so that nothing above it sees a virError.
package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// Options qualify Open.
type Options struct {
	// Debug, when set, receives one line per libvirt call: its name, its
	// argument, how long it took and how it ended.
	Debug io.Writer
	// RedialWait is how long a call that finds libvirtd gone waits for it
	// to answer again (redial.go): 0 means a minute, below 0 never.
	RedialWait time.Duration
}

// Conn is an open libvirt connection.
type Conn struct {
	// lvMu guards lv and every Domain's lv: a reconnection swaps them
	// while calls read them (redial.go).
	lvMu  sync.RWMutex
	lv    *libvirt.Connect
	uri   string
	debug io.Writer

	redial redialing

	mu      sync.Mutex
	domains []*Domain   // handed out; freed on Close
	subs    subscribers // event channels to tell of a lost connection
	closed  bool        // libvirt reported the connection closed
	lostAt  time.Time   // when it did
	gen     int         // connections opened before this one
	closing bool        // Close was called: nothing reconnects
}

var (
	_ virt.Conn     = (*Conn)(nil)
	_ virt.Redialer = (*Conn)(nil)
)

// Open connects to uri; "" means libvirt's own choice ($LIBVIRT_DEFAULT_URI,
// then its default). It never prompts for credentials.
func Open(ctx context.Context, uri string, opts Options) (*Conn, error) {
	startEventLoop()
	c := &Conn{debug: opts.Debug, redial: newRedialing(uri, opts.RedialWait)}
	err := translate("virConnectOpen", c.once("virConnectOpen", uri, func() (err error) {
		c.lv, err = libvirt.NewConnect(uri)
		return err
	}))
	if err != nil {
		shown := uri
		if shown == "" {
			shown = "libvirt's default URI"
		}
		return nil, fmt.Errorf("cannot connect to %s: %w", shown, withKind(err, virt.ErrConnect))
	}
	c.uri = uri
	c.watchClose(c.lv, 0)
	_ = c.call(ctx, "virConnectGetURI", "", func() (err error) {
		c.uri, err = c.lv.GetURI()
		return err
	})
	return c, nil
}

// URI is the connection's canonical URI.
func (c *Conn) URI() string { return c.uri }

// Close frees every domain handed out and closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	doms := c.domains
	c.domains = nil
	c.closing = true
	c.mu.Unlock()
	c.lvMu.RLock()
	defer c.lvMu.RUnlock()
	for _, d := range doms {
		_ = d.lv.Free()
	}
	// The close callback holds a reference: without this the socket stays
	// open, and a process opening many connections exhausts libvirtd's fds.
	_ = c.lv.UnregisterCloseCallback()
	return translate("virConnectClose", c.once("virConnectClose", "", func() error {
		_, err := c.lv.Close()
		return err
	}))
}

// Domain looks a domain up by name, then by UUID, then by numeric ID, as
// virsh does.
func (c *Conn) Domain(ctx context.Context, name string) (virt.Domain, error) {
	var d *libvirt.Domain
	err := c.call(ctx, "virDomainLookupByName", name, func() (err error) {
		d, err = c.lv.LookupDomainByName(name)
		return err
	})
	if errors.Is(err, virt.ErrNoDomain) && looksLikeUUID(name) {
		err = c.call(ctx, "virDomainLookupByUUIDString", name, func() (err error) {
			d, err = c.lv.LookupDomainByUUIDString(name)
			return err
		})
	}
	if id, ok := parseID(name); ok && errors.Is(err, virt.ErrNoDomain) {
		err = c.call(ctx, "virDomainLookupByID", name, func() (err error) {
			d, err = c.lv.LookupDomainById(id)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	return c.adopt(ctx, d, name), nil
}

// adopt wraps a domain handle, to be freed with the connection, under its
// own name (name, a UUID or ID, only if libvirt cannot say).
func (c *Conn) adopt(ctx context.Context, d *libvirt.Domain, name string) *Domain {
	dom := &Domain{c: c, lv: d, name: name}
	c.mu.Lock()
	c.domains = append(c.domains, dom)
	c.mu.Unlock()
	_ = c.call(ctx, "virDomainGetName", name, func() (err error) {
		if n, err := d.GetName(); err == nil {
			dom.name = n
		}
		return err
	})
	// Looked up by UUID again after a reconnection.
	_ = c.call(ctx, "virDomainGetUUIDString", dom.name, func() (err error) {
		dom.uuid, err = d.GetUUIDString()
		return err
	})
	return dom
}

// DefineDomain defines a persistent domain.
func (c *Conn) DefineDomain(ctx context.Context, doc string) (virt.Domain, error) {
	var d *libvirt.Domain
	err := c.call(ctx, "virDomainDefineXML", "", func() (err error) {
		d, err = c.lv.DomainDefineXML(doc)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.adopt(ctx, d, ""), nil
}

// Domains lists domain names, sorted.
func (c *Conn) Domains(ctx context.Context, active bool) ([]string, error) {
	flags := libvirt.CONNECT_LIST_DOMAINS_ACTIVE
	if !active {
		flags |= libvirt.CONNECT_LIST_DOMAINS_INACTIVE
	}
	return c.listDomains(ctx, flags, "")
}

// SecurityModels reads the host's security drivers from its capabilities.
func (c *Conn) SecurityModels(ctx context.Context) ([]virt.SecurityModel, error) {
	var doc string
	err := c.call(ctx, "virConnectGetCapabilities", "", func() (err error) {
		doc, err = c.lv.GetCapabilities()
		return err
	})
	if err != nil {
		return nil, err
	}
	return securityModels(doc)
}

// securityModels reads the secmodel elements of a capabilities document.
func securityModels(doc string) ([]virt.SecurityModel, error) {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("the host's capabilities: %w", err)
	}
	var models []virt.SecurityModel
	for _, m := range caps.Host.SecModel {
		sm := virt.SecurityModel{Name: m.Name}
		for _, l := range m.Labels {
			if sm.BaseLabels == nil {
				sm.BaseLabels = map[string]string{}
			}
			sm.BaseLabels[l.Type] = l.Value
		}
		models = append(models, sm)
	}
	return models, nil
}

// DomainsWithCheckpoints lists, sorted, the domains that have at least one
// checkpoint, in one call (shell completion of checkpoint-* commands).
func (c *Conn) DomainsWithCheckpoints(ctx context.Context) ([]string, error) {
	return c.listDomains(ctx, libvirt.CONNECT_LIST_DOMAINS_HAS_CHECKPOINT, "has-checkpoint")
}

func (c *Conn) listDomains(ctx context.Context, flags libvirt.ConnectListAllDomainsFlags, label string) ([]string, error) {
	var doms []libvirt.Domain
	err := c.call(ctx, "virConnectListAllDomains", label, func() (err error) {
		doms, err = c.lv.ListAllDomains(flags)
		return err
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(doms))
	for i := range doms {
		if n, err := doms[i].GetName(); err == nil {
			names = append(names, n)
		}
		_ = doms[i].Free()
	}
	sort.Strings(names)
	return names, nil
}

// call runs one libvirt call, logs it when debugging, and translates its
// error. A call that finds libvirtd gone reconnects, waiting for it no
// longer than ctx lasts, and is made again where that is safe (redial.go).
// The libvirt call itself is not cut short by ctx: libvirt cannot be.
func (c *Conn) call(ctx context.Context, op, arg string, fn func() error) error {
	c.lvMu.RLock()
	gen := c.generation()
	err := c.once(op, arg, fn)
	lost := err != nil && c.lost()
	c.lvMu.RUnlock()
	if !lost {
		return translate(op, err)
	}
	if rerr := c.reconnect(ctx, op, err, gen); rerr != nil {
		return rerr
	}
	if !neverSent(err) && !readOnly(op) {
		return &virt.Error{Op: op, Kind: virt.ErrConnect,
			Msg: fmt.Sprintf("libvirtd went away while it ran this call, so whether it took effect is unknown (%s)", message(err))}
	}
	c.lvMu.RLock()
	defer c.lvMu.RUnlock()
	return translate(op, c.once(op, arg, fn))
}

// once runs fn and logs it when debugging; the error is libvirt's.
func (c *Conn) once(op, arg string, fn func() error) error {
	start := time.Now()
	err := fn()
	if c.debug != nil {
		outcome := "ok"
		if err != nil {
			outcome = "error: " + message(err)
		}
		fmt.Fprintf(c.debug, "libvirt: %s(%q) %s %s\n", op, arg, time.Since(start).Round(time.Microsecond), outcome)
	}
	return err
}

// looksLikeUUID is whether s can be a UUID (32 hex digits, dashes aside),
// as libvirt parses one: a domain name of 32 other characters is not (a
// lookup by UUID then fails with "Invalid UUID", not "no domain").
func looksLikeUUID(s string) bool {
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 {
		return false
	}
	for _, r := range hex {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

func parseID(s string) (uint32, bool) {
	var id uint32
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
		id = id*10 + uint32(r-'0')
	}
	return id, true
}
