package libvirtconn

import (
	"context"

	"libvirt.org/go/libvirt"
)

// Boot starts the domain (virDomainCreate).
func (d *Domain) Boot(ctx context.Context) error {
	return d.c.call("virDomainCreate", d.name, func() error { return d.lv.Create() })
}

// BlockPull starts a block pull of disk onto the whole backing chain
// (virDomainBlockPull, no bandwidth limit).
func (d *Domain) BlockPull(ctx context.Context, disk string) error {
	return d.c.call("virDomainBlockPull", disk, func() error { return d.lv.BlockPull(disk, 0, 0) })
}

// BlockJobAbort cancels disk's block job; without the ASYNC flag libvirt
// returns once the job has ended.
func (d *Domain) BlockJobAbort(ctx context.Context, disk string) error {
	return d.c.call("virDomainBlockJobAbort", disk, func() error {
		return d.lv.BlockJobAbort(disk, libvirt.DomainBlockJobAbortFlags(0))
	})
}
