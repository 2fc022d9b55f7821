// Package virtfake is an in-memory virt.Conn for fast tests: domains, their
// disks, checkpoints and backup jobs behave as libvirt 9.0's QEMU driver
// does, errors included (the same kinds through errors.Is, messages worded
// as libvirt words them). The conformance suite in virt/virttest runs
// against it as well as against libvirt's test driver and a real libvirtd,
// so that it cannot drift from them.
//
// Besides virt.Conn and virt.Domain it offers test controls: holding a push
// job running (HoldPush), ending a job (EndJob), setting progress
// (SetProgress), stopping a domain (Stop), breaking a checkpoint's bitmaps
// (BreakCheckpoint), a guest agent and its frozen filesystems (SetAgent,
// Frozen, OnFreeze), failing the next call of a method (FailNext), listing
// the calls made (Calls), and losing the connection (Disconnect).
//
// Every method is safe for concurrent use.
package virtfake

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// URI is the fake's connection URI.
const URI = "fake:///default"

// DefaultLockWait is how long BeginBackup waits for a running job to end
// before it gives up; libvirt waits 30 s for its state change lock, which
// is too long for fast tests (see SetLockWait).
const DefaultLockWait = 200 * time.Millisecond

// Conn is an in-memory connection. Its zero value is not usable: call New.
type Conn struct {
	mu       sync.Mutex
	domains  []*Domain // in definition order
	lastID   int       // the last domain ID handed out
	calls    []string
	failures map[string][]error
	down     bool // Disconnect was called, Reconnect not yet
	closed   bool
	lockWait time.Duration
	// secModels is what SecurityModels says; nil: none.
	secModels []virt.SecurityModel
	// stores are the files libvirt created for backup jobs and has not
	// removed: it refuses to create a store over one (the fake writes no
	// file, so it remembers them besides looking on disk).
	stores map[string]bool
	pools  map[string]*pool // AddPool (storage.go)
}

var _ virt.Conn = (*Conn)(nil)

// New returns an empty connection.
func New() *Conn {
	return &Conn{failures: map[string][]error{}, lockWait: DefaultLockWait, stores: map[string]bool{}}
}

// DomainSpec describes a domain for AddDomain.
type DomainSpec struct {
	Name string
	UUID string // generated when ""
	// Disks of the domain. For convenience a disk's empty Device is
	// "disk", an empty Type "file", an empty Format "qcow2" (the format
	// checkpoints need), and a disk device's empty Source a made-up path.
	Disks []virt.Disk
	// Inactive makes the domain shut off; it runs otherwise.
	Inactive bool
	// Agent gives the domain a guest agent that answers (see SetAgent).
	Agent bool
}

// AddDomain defines a domain (and starts it unless spec.Inactive). It
// panics when the name or UUID is taken: that is a mistake in the test.
func (c *Conn) AddDomain(spec DomainSpec) *Domain {
	c.mu.Lock()
	defer c.mu.Unlock()
	def := &libvirtxml.Domain{
		Type:    "qemu",
		Name:    spec.Name,
		UUID:    spec.UUID,
		Memory:  &libvirtxml.DomainMemory{Value: 64, Unit: "MiB"},
		VCPU:    &libvirtxml.DomainVCPU{Value: 1},
		OS:      &libvirtxml.DomainOS{Type: &libvirtxml.DomainOSType{Arch: "x86_64", Type: "hvm"}},
		Devices: &libvirtxml.DomainDeviceList{},
	}
	if def.UUID == "" {
		def.UUID = newUUID()
	}
	for _, disk := range spec.Disks {
		if disk.Device == "" {
			disk.Device = "disk"
		}
		if disk.Type == "" {
			disk.Type = "file"
		}
		if disk.Format == "" {
			disk.Format = "qcow2"
		}
		if disk.Source == "" && disk.Device == "disk" {
			disk.Source = "/fake/" + spec.Name + "/" + disk.Target + "." + disk.Format
		}
		def.Devices.Disks = append(def.Devices.Disks, diskXML(disk))
	}
	if err := c.conflict("AddDomain", def); err != nil {
		panic("virtfake: AddDomain: " + err.Error())
	}
	d := c.define(def)
	d.agentConfigured, d.agentUp = spec.Agent, spec.Agent
	if !spec.Inactive {
		d.start()
	}
	return d
}

// SetLockWait sets how long BeginBackup waits for a running job to end
// (libvirt's state change lock) before it fails as libvirt does.
func (c *Conn) SetLockWait(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lockWait = d
}

// FailNext makes the next call of the named method ("BeginBackup",
// "DeleteCheckpoint", "Job", "Domain", ...) return err, without doing
// anything else. Several calls queue up, one failure per call.
func (c *Conn) FailNext(method string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures[method] = append(c.failures[method], err)
}

// Calls lists the names of the virt.Conn and virt.Domain methods called so
// far, in order (Name and URI aside), failed calls included.
func (c *Conn) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// Disconnect loses the connection as when libvirtd goes away: open Events
// channels receive EventDisconnected (and nothing after it), and every
// later call fails until Reconnect with libvirt's "internal error: client
// socket is closed", which has no kind: libvirtconn returns it so, not as
// virt.ErrConnect.
func (c *Conn) Disconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = true
	for _, d := range c.domains {
		for s := range d.subs {
			s.send(virt.Event{Kind: virt.EventDisconnected})
			delete(d.subs, s)
		}
	}
}

// Reconnect makes calls work again after Disconnect, as a new connection
// to the same daemon would; Events channels opened before stay silent.
func (c *Conn) Reconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = false
}

// enter records a call of method and says whether it must fail, and with
// what; op names the libvirt call for the error. Callers hold c.mu.
func (c *Conn) enter(method, op string) error {
	c.calls = append(c.calls, method)
	if q := c.failures[method]; len(q) > 0 {
		c.failures[method] = q[1:]
		return q[0]
	}
	switch {
	case c.closed:
		return &virt.Error{Op: op, Msg: "invalid connection pointer in " + op}
	case c.down:
		// libvirt gives a lost connection no code of its own: libvirtconn
		// returns this with no kind.
		return newErr(op, errInternal, "client socket is closed")
	}
	return nil
}

// URI is the fake's URI.
func (c *Conn) URI() string { return URI }

// Close closes the connection: later calls fail.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("Close", "virConnectClose"); err != nil {
		return err
	}
	c.closed = true
	return nil
}

// Domain looks a domain up by name, then UUID, then ID, as libvirtconn
// does; the error is the last lookup's.
func (c *Conn) Domain(ctx context.Context, name string) (virt.Domain, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("Domain", "virDomainLookupByName"); err != nil {
		return nil, err
	}
	if d := c.byName(name); d != nil {
		return d, nil
	}
	err := newErr("virDomainLookupByName", errNoDomain, "no domain with matching name '%s'", name)
	if len(strings.ReplaceAll(name, "-", "")) == 32 {
		if d := c.byUUID(name); d != nil {
			return d, nil
		}
		err = newErr("virDomainLookupByUUIDString", errNoDomain, "no domain with matching uuid '%s'", name)
	}
	if id, perr := strconv.Atoi(name); perr == nil && id >= 0 && len(name) <= 9 {
		for _, d := range c.domains {
			if d.active && d.id == id {
				return d, nil
			}
		}
		err = newErr("virDomainLookupByID", errNoDomain, "no domain with matching id %d", id)
	}
	return nil, err
}

// Domains lists domain names, sorted: the running ones only when active.
// SecurityModels is what SetSecurityModels set: none by default, as a
// session daemon has.
func (c *Conn) SecurityModels(ctx context.Context) ([]virt.SecurityModel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("SecurityModels", "virConnectGetCapabilities"); err != nil {
		return nil, err
	}
	if c.secModels == nil {
		return []virt.SecurityModel{{Name: "none"}}, nil
	}
	return append([]virt.SecurityModel(nil), c.secModels...), nil
}

// SetSecurityModels sets the host's security drivers, such as dac with
// a base label of "+64055:+64055" for a system daemon's DAC driver.
func (c *Conn) SetSecurityModels(models ...virt.SecurityModel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.secModels = models
}

func (c *Conn) Domains(ctx context.Context, active bool) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enter("Domains", "virConnectListAllDomains"); err != nil {
		return nil, err
	}
	var names []string
	for _, d := range c.domains {
		if d.active || !active {
			names = append(names, d.name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// DefineDomain defines a domain from its XML, shut off; the XML of a
// defined domain (same name and UUID) replaces its persistent definition.
func (c *Conn) DefineDomain(ctx context.Context, doc string) (virt.Domain, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	const op = "virDomainDefineXML"
	if err := c.enter("DefineDomain", op); err != nil {
		return nil, err
	}
	def := &libvirtxml.Domain{}
	if err := def.Unmarshal(doc); err != nil {
		return nil, parseErr(op, "domain_definition", doc, err)
	}
	if def.Name == "" {
		return nil, newErr(op, errXML, "missing name information")
	}
	if def.UUID == "" {
		def.UUID = newUUID()
	}
	if def.Devices != nil {
		for i := range def.Devices.Disks {
			postParseDisk(&def.Devices.Disks[i])
		}
	}
	if d := c.byName(def.Name); d != nil && sameUUID(d.uuid, def.UUID) {
		d.def = def
		if !d.active {
			d.live = copyDomain(def)
		}
		return d, nil
	}
	if err := c.conflict(op, def); err != nil {
		return nil, err
	}
	return c.define(def), nil
}

// conflict is libvirt's refusal of a second domain with a name or UUID
// already taken.
func (c *Conn) conflict(op string, def *libvirtxml.Domain) error {
	if d := c.byUUID(def.UUID); d != nil {
		return newErr(op, errOperationFailed, "domain '%s' is already defined with uuid %s", d.name, d.uuid)
	}
	if d := c.byName(def.Name); d != nil {
		return newErr(op, errOperationFailed, "domain '%s' already exists with uuid %s", d.name, d.uuid)
	}
	return nil
}

func (c *Conn) define(def *libvirtxml.Domain) *Domain {
	d := &Domain{c: c, name: def.Name, uuid: strings.ToLower(def.UUID), def: def, live: copyDomain(def),
		bitmaps: map[string]map[string]bool{}, subs: map[*subscriber]struct{}{}}
	c.domains = append(c.domains, d)
	return d
}

func (c *Conn) byName(name string) *Domain {
	for _, d := range c.domains {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (c *Conn) byUUID(id string) *Domain {
	for _, d := range c.domains {
		if sameUUID(d.uuid, id) {
			return d
		}
	}
	return nil
}

func sameUUID(a, b string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "-", "")) }
	return norm(a) == norm(b)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
