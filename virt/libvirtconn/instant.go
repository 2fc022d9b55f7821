package libvirtconn

import (
	"context"

	"libvirt.org/go/libvirt"
)

// Boot starts the domain (virDomainCreate).
func (d *Domain) Boot(ctx context.Context) error {
	return d.c.call(ctx, "virDomainCreate", d.name, func() error { return d.lv.Create() })
}

// BlockPull starts a block pull of disk onto the whole backing chain
// (virDomainBlockPull, no bandwidth limit).
func (d *Domain) BlockPull(ctx context.Context, disk string) error {
	return d.c.call(ctx, "virDomainBlockPull", disk, func() error { return d.lv.BlockPull(disk, 0, 0) })
}

// BlockJobAbort cancels disk's block job; without the ASYNC flag libvirt
// returns once the job has ended.
func (d *Domain) BlockJobAbort(ctx context.Context, disk string) error {
	return d.c.call(ctx, "virDomainBlockJobAbort", disk, func() error {
		return d.lv.BlockJobAbort(disk, libvirt.DomainBlockJobAbortFlags(0))
	})
}

// Undefine removes the domain's definition, keeping its nvram file (which
// an instant restore wrote and the admin may still want) and its images.
func (d *Domain) Undefine(ctx context.Context) error {
	return d.c.call(ctx, "virDomainUndefineFlags", d.name, func() error {
		return d.lv.UndefineFlags(libvirt.DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
	})
}
