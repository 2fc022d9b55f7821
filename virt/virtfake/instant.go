package virtfake

import (
	"context"
)

// pullSteps is how many BlockJob reads a fake block pull takes to end: a
// reader sees it run, then end, as with QEMU's stream job.
const pullSteps = 4

// pull is a running block pull of one disk.
type pull struct {
	cur, end uint64
}

// Boot starts a shut-off domain, as virDomainCreate does.
func (d *Domain) Boot(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainCreate"
	if err := d.c.enter("Boot", op); err != nil {
		return err
	}
	if d.active {
		return newErr(op, errOperationInvalid, "domain is already running")
	}
	d.start()
	return nil
}

// BlockPull starts a pull of disk, which ends after pullSteps reads of
// BlockJob with the disk's backing chain gone from the live XML.
func (d *Domain) BlockPull(ctx context.Context, disk string) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainBlockPull"
	if err := d.c.enter("BlockPull", op); err != nil {
		return err
	}
	if !d.active {
		return notRunning(op)
	}
	if diskByTarget(d.live, disk) == nil {
		return newErr(op, errInvalidArg, "disk '%s' not found in domain", disk)
	}
	if d.pulls[disk] != nil || d.job != nil {
		return newErr(op, errOperationInvalid, "disk '%s' already in active block job", disk)
	}
	if d.pulls == nil {
		d.pulls = map[string]*pull{}
	}
	d.pulls[disk] = &pull{end: pullSteps << 20}
	return nil
}

// BlockJobAbort cancels disk's pull; what it copied stays.
func (d *Domain) BlockJobAbort(ctx context.Context, disk string) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainBlockJobAbort"
	if err := d.c.enter("BlockJobAbort", op); err != nil {
		return err
	}
	if !d.active {
		return notRunning(op)
	}
	if diskByTarget(d.live, disk) == nil {
		return newErr(op, errInvalidArg, "disk '%s' not found in domain", disk)
	}
	if d.pulls[disk] == nil {
		return newErr(op, errInvalidArg, "disk %s does not have an active block job", disk)
	}
	delete(d.pulls, disk)
	return nil
}

// stepPull advances disk's pull by one read; the last one ends it and
// drops the disk's backing chain from the live definition.
func (d *Domain) stepPull(disk string) (cur, end uint64, ok bool) {
	p := d.pulls[disk]
	if p == nil {
		return 0, 0, false
	}
	if p.cur >= p.end {
		delete(d.pulls, disk)
		for i := range d.live.Devices.Disks {
			x := &d.live.Devices.Disks[i]
			if x.Target != nil && x.Target.Dev == disk {
				x.BackingStore = nil
			}
		}
		return 0, 0, false
	}
	p.cur += p.end / pullSteps
	return p.cur, p.end, true
}

// Undefine removes a shut-off domain; a running one becomes transient in
// libvirt, which the fake does not model: it refuses.
func (d *Domain) Undefine(ctx context.Context) error {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = "virDomainUndefineFlags"
	if err := d.c.enter("Undefine", op); err != nil {
		return err
	}
	if d.active {
		return newErr(op, errOperationInvalid, "the fake undefines only shut-off domains")
	}
	for i, x := range d.c.domains {
		if x == d {
			d.c.domains = append(d.c.domains[:i:i], d.c.domains[i+1:]...)
			break
		}
	}
	return nil
}
