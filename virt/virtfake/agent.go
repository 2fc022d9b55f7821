package virtfake

import (
	"context"

	"vbackup/virt"
)

// The guest agent, as libvirt 9.0 and qemu-ga 7.2 answer for it.

var (
	errAgentUnsup = errClass{"argument unsupported: ", virt.ErrNoAgent}
	errAgentDown  = errClass{"Guest agent is not responding: ", virt.ErrNoAgent}
	// libvirtconn gives agent calls on a domain that does not run
	// ErrNoAgent too.
	errAgentInactive = errClass{errOperationInvalid.prefix, virt.ErrNoAgent}
)

// SetAgent starts (on) or stops the domain's guest agent, as the guest
// would: a domain made without DomainSpec.Agent gets the agent's channel
// configured on the first SetAgent(true).
func (d *Domain) SetAgent(on bool) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if on {
		d.agentConfigured = true
	}
	d.agentUp = on
}

// Frozen reports whether the guest's filesystems are frozen.
func (d *Domain) Frozen() bool {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	return d.frozen
}

// OnFreeze makes fn run after each successful FreezeFS, with FreezeFS's
// context and without the Conn's lock (a test can cancel a context there,
// or wait until the caller has); nil removes it.
func (d *Domain) OnFreeze(fn func(ctx context.Context)) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	d.onFreeze = fn
}

// agentReady is libvirt's check before any agent command.
func (d *Domain) agentReady(op string) error {
	switch {
	case !d.active:
		return newErr(op, errAgentInactive, "domain is not running")
	case !d.agentConfigured:
		return newErr(op, errAgentUnsup, "QEMU guest agent is not configured")
	case !d.agentUp:
		return newErr(op, errAgentDown, "QEMU guest agent is not connected")
	}
	return nil
}

// PingAgent answers while the agent runs, frozen or not (qemu-ga allows
// guest-ping while frozen).
func (d *Domain) PingAgent(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainQemuAgentCommand"
	if err := d.c.enter("PingAgent", op); err != nil {
		return err
	}
	return d.agentReady(op)
}

// FreezeFS freezes the guest's filesystems; qemu-ga refuses a second freeze.
func (d *Domain) FreezeFS(ctx context.Context) error {
	d.c.mu.Lock()
	const op = "virDomainFSFreeze"
	if err := d.c.enter("FreezeFS", op); err != nil {
		d.c.mu.Unlock()
		return err
	}
	if err := d.agentReady(op); err != nil {
		d.c.mu.Unlock()
		return err
	}
	if d.frozen {
		d.c.mu.Unlock()
		return newErr(op, errInternal, "unable to execute QEMU agent command 'guest-fsfreeze-freeze': Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state")
	}
	d.frozen = true
	hook := d.onFreeze
	d.c.mu.Unlock()
	if hook != nil {
		hook(ctx)
	}
	return nil
}

// ThawFS thaws them; thawing what is not frozen succeeds (it thaws none).
func (d *Domain) ThawFS(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainFSThaw"
	if err := d.c.enter("ThawFS", op); err != nil {
		return err
	}
	if err := d.agentReady(op); err != nil {
		return err
	}
	d.frozen = false
	return nil
}
