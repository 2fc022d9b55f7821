package libvirtconn

import (
	"context"
	"errors"

	"libvirt.org/go/libvirt"

	"vbackup/virt"
)

// pingTimeout is how long PingAgent waits for the agent, in seconds: an
// agent that is connected answers guest-ping at once.
const pingTimeout = 5

// agentCodes are libvirt's ways of saying that no agent is there to
// answer: none configured, not connected (the guest has not started it),
// out of sync, silent past the timeout, a driver without agents, a domain
// that does not run.
var agentCodes = map[libvirt.ErrorNumber]bool{
	libvirt.ERR_ARGUMENT_UNSUPPORTED:  true,
	libvirt.ERR_AGENT_UNRESPONSIVE:    true,
	libvirt.ERR_AGENT_UNSYNCED:        true,
	libvirt.ERR_AGENT_COMMAND_TIMEOUT: true,
	libvirt.ERR_NO_SUPPORT:            true,
	libvirt.ERR_OPERATION_INVALID:     true,
}

// PingAgent asks the guest agent for guest-ping.
func (d *Domain) PingAgent(ctx context.Context) error {
	return d.agentCall(ctx, "virDomainQemuAgentCommand", func() error {
		_, err := d.lv.QemuAgentCommand(`{"execute":"guest-ping"}`, pingTimeout, 0)
		return err
	})
}

// FreezeFS freezes all the guest's filesystems.
func (d *Domain) FreezeFS(ctx context.Context) error {
	return d.agentCall(ctx, "virDomainFSFreeze", func() error { return d.lv.FSFreeze(nil, 0) })
}

// ThawFS thaws all the guest's filesystems.
func (d *Domain) ThawFS(ctx context.Context) error {
	return d.agentCall(ctx, "virDomainFSThaw", func() error { return d.lv.FSThaw(nil, 0) })
}

// agentCall is call, with libvirt's agent errors as virt.ErrNoAgent.
func (d *Domain) agentCall(ctx context.Context, op string, fn func() error) error {
	noAgent := false
	err := d.c.call(ctx, op, d.name, func() error {
		err := fn()
		var lerr libvirt.Error
		noAgent = errors.As(err, &lerr) && agentCodes[lerr.Code]
		return err
	})
	if noAgent {
		var verr *virt.Error
		if errors.As(err, &verr) {
			return &virt.Error{Op: verr.Op, Kind: virt.ErrNoAgent, Msg: verr.Msg}
		}
	}
	return err
}
