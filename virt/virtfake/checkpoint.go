package virtfake

import (
	"context"
	"strconv"
	"strings"
	"time"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

type checkpoint struct {
	name, parent, description string
	created                   int64
	disks                     []cpDisk
	dom                       *libvirtxml.Domain // nil when redefined without one
}

type cpDisk struct {
	name, checkpoint, bitmap string
}

const opCreateCheckpoint = "virDomainCheckpointCreateXML"

// CreateCheckpoint creates a checkpoint (bitmaps on its disks, parent the
// current checkpoint) or, with Redefine, restores one's metadata.
func (d *Domain) CreateCheckpoint(ctx context.Context, doc string, flags virt.CreateFlags) (string, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	const op = opCreateCheckpoint
	if err := d.c.enter("CreateCheckpoint", op); err != nil {
		return "", err
	}
	switch {
	case flags.Quiesce:
		// libvirt 9.0's QEMU driver accepts no quiesce flag for checkpoints.
		return "", newErr(op, errFlags, "unsupported flags (0x2) in function qemuCheckpointCreateXML")
	case flags.RedefineValidate && !flags.Redefine:
		return "", newErr(op, errInvalidArg, "Flag 'VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE' requires flag 'VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE'")
	case !flags.Redefine && !d.active:
		return "", newErr(op, errOperationUnsup, "cannot create checkpoint for inactive domain")
	}
	def, err := parseCheckpoint(op, doc, flags.Redefine)
	if err != nil {
		return "", err
	}
	if flags.Redefine {
		return def.Name, d.redefine(op, def, flags.RedefineValidate)
	}
	cp, err := d.prepareCheckpoint(op, def)
	if err != nil {
		return "", err
	}
	d.commitCheckpoint(cp)
	return cp.name, nil
}

func parseCheckpoint(op, doc string, redefine bool) (*libvirtxml.DomainCheckpoint, error) {
	if root, err := rootElement(doc); err != nil {
		return nil, parseErr(op, "domain_checkpoint", doc, err)
	} else if root.Name.Local != "domaincheckpoint" {
		return nil, newErr(op, errXML, "expecting root element of 'domaincheckpoint', not '%s'", root.Name.Local)
	}
	def := &libvirtxml.DomainCheckpoint{}
	if err := def.Unmarshal(doc); err != nil {
		return nil, parseErr(op, "domain_checkpoint", doc, err)
	}
	if strings.Contains(def.Name, "/") {
		return nil, schemaErr(op, "domaincheckpoint.rng", "Extra element name in interleave\nElement domaincheckpoint failed to validate content")
	}
	if def.Disks != nil {
		for _, x := range def.Disks.Disks {
			if x.Checkpoint != "" && x.Checkpoint != "no" && x.Checkpoint != "bitmap" {
				return nil, schemaErr(op, "domaincheckpoint.rng", "Extra element disks in interleave\nElement domaincheckpoint failed to validate content")
			}
		}
	}
	if !redefine {
		return def, nil
	}
	if def.Name == "" {
		return nil, newErr(op, errXML, "a redefined checkpoint must have a name")
	}
	if _, err := strconv.ParseInt(def.CreationTime, 10, 64); err != nil {
		return nil, newErr(op, errInternal, "missing creationTime from existing checkpoint")
	}
	return def, nil
}

// prepareCheckpoint checks a new checkpoint as qemuCheckpointPrepare does;
// nothing changes until commitCheckpoint.
func (d *Domain) prepareCheckpoint(op string, def *libvirtxml.DomainCheckpoint) (*checkpoint, error) {
	now := time.Now().Unix()
	cp := &checkpoint{name: def.Name, description: def.Description, created: now, dom: copyDomain(d.live)}
	if cp.name == "" {
		cp.name = strconv.FormatInt(now, 10)
	}
	var given []libvirtxml.DomainCheckpointDisk
	if def.Disks != nil {
		given = def.Disks.Disks
	}
	disks, err := alignDisks(op, cp.name, given, cp.dom)
	if err != nil {
		return nil, err
	}
	cp.disks = disks
	for _, x := range disks {
		if x.checkpoint != "bitmap" {
			continue
		}
		if x.bitmap != cp.name {
			return nil, newErr(op, errConfigUnsup, "bitmap for disk '%s' must match checkpoint name '%s'", x.name, cp.name)
		}
		if f := diskByTarget(d.live, x.name).Format; f != "qcow2" {
			if f == "" {
				f = "none"
			}
			return nil, newErr(op, errConfigUnsup, "checkpoint for disk %s unsupported for storage type %s", x.name, f)
		}
	}
	if d.checkpoint(cp.name) != nil {
		return nil, newErr(op, errOperationFailed, "domain moment %s already exists", cp.name)
	}
	return cp, nil
}

// commitCheckpoint adds the bitmaps and makes the checkpoint current.
func (d *Domain) commitCheckpoint(cp *checkpoint) {
	cp.parent = d.current
	for _, x := range cp.disks {
		if x.checkpoint == "bitmap" {
			if d.bitmaps[x.name] == nil {
				d.bitmaps[x.name] = map[string]bool{}
			}
			d.bitmaps[x.name][x.bitmap] = true
		}
	}
	d.checkpoints = append(d.checkpoints, cp)
	d.current = cp.name
}

// alignDisks is virDomainCheckpointAlignDisks: one entry per disk of dom,
// in its order. Listing no disk means a bitmap on every writable disk with
// media; listing some leaves the others out ("no").
func alignDisks(op, name string, given []libvirtxml.DomainCheckpointDisk, dom *libvirtxml.Domain) ([]cpDisk, error) {
	domDisks := virt.DisksOf(dom)
	if len(given) > len(domDisks) {
		return nil, newErr(op, errConfigUnsup, "too many disk checkpoint requests for domain")
	}
	if len(domDisks) == 0 {
		return nil, newErr(op, errConfigUnsup, "domain must have at least one disk to perform checkpoints")
	}
	fallback := "no"
	if len(given) == 0 {
		fallback = "bitmap"
	}
	chosen := map[string]cpDisk{}
	for _, g := range given {
		disk := diskByName(dom, g.Name)
		if disk == nil {
			return nil, newErr(op, errConfigUnsup, "no disk named '%s'", g.Name)
		}
		if _, twice := chosen[disk.Target]; twice {
			return nil, newErr(op, errConfigUnsup, "disk '%s' specified twice", g.Name)
		}
		kind := g.Checkpoint
		if kind == "" {
			kind = "bitmap"
		}
		if (disk.Empty() || disk.ReadOnly) && kind != "no" {
			return nil, newErr(op, errConfigUnsup, "disk '%s' is empty or readonly", g.Name)
		}
		chosen[disk.Target] = cpDisk{name: disk.Target, checkpoint: kind, bitmap: g.Bitmap}
	}
	out := make([]cpDisk, 0, len(domDisks))
	for _, disk := range domDisks {
		x, ok := chosen[disk.Target]
		if !ok {
			x = cpDisk{name: disk.Target, checkpoint: fallback}
			if disk.Empty() || disk.ReadOnly {
				x.checkpoint = "no"
			}
		}
		out = append(out, x)
	}
	return withBitmapNames(out, name), nil
}

func withBitmapNames(disks []cpDisk, name string) []cpDisk {
	for i := range disks {
		if disks[i].checkpoint == "bitmap" && disks[i].bitmap == "" {
			disks[i].bitmap = name
		}
	}
	return disks
}

// redefine restores a checkpoint's metadata (its bitmaps are wherever they
// are). It becomes current when its parent is current, or when there is
// no current checkpoint, as virDomainCheckpointRedefinePrep decides.
func (d *Domain) redefine(op string, def *libvirtxml.DomainCheckpoint, validate bool) error {
	cp := &checkpoint{name: def.Name, description: def.Description}
	cp.created, _ = strconv.ParseInt(def.CreationTime, 10, 64)
	if def.Parent != nil {
		cp.parent = def.Parent.Name
	}
	if err := d.checkCycles(op, cp); err != nil {
		return err
	}
	if def.Domain != nil {
		if !sameUUID(def.Domain.UUID, d.uuid) {
			return newErr(op, errInvalidArg, "definition for checkpoint %s must use uuid %s", cp.name, d.uuid)
		}
		cp.dom = copyDomain(def.Domain)
		var given []libvirtxml.DomainCheckpointDisk
		if def.Disks != nil {
			given = def.Disks.Disks
		}
		disks, err := alignDisks(op, cp.name, given, cp.dom)
		if err != nil {
			return err
		}
		cp.disks = disks
	} else if def.Disks != nil {
		for _, x := range def.Disks.Disks {
			kind := x.Checkpoint
			if kind == "" {
				kind = "bitmap"
			}
			cp.disks = append(cp.disks, cpDisk{name: x.Name, checkpoint: kind, bitmap: x.Bitmap})
		}
		cp.disks = withBitmapNames(cp.disks, cp.name)
	}
	makeCurrent := (cp.parent != "" && cp.parent == d.current) || d.current == ""
	if validate {
		if !d.active {
			return notRunning(op)
		}
		for _, x := range cp.disks {
			if x.checkpoint == "bitmap" && diskByTarget(d.live, x.name) != nil && !d.bitmaps[x.name][cp.name] {
				return newErr(op, errInconsistent, "missing or broken bitmap '%s' for disk '%s'", cp.name, x.name)
			}
		}
	}
	if old := d.checkpoint(cp.name); old != nil {
		*old = *cp
	} else {
		d.checkpoints = append(d.checkpoints, cp)
	}
	if makeCurrent {
		d.current = cp.name
	}
	return nil
}

func (d *Domain) checkCycles(op string, cp *checkpoint) error {
	if cp.parent == "" {
		return nil
	}
	if cp.parent == cp.name {
		return newErr(op, errInvalidArg, "cannot set moment %s as its own parent", cp.name)
	}
	p := d.checkpoint(cp.parent)
	if p == nil {
		return newErr(op, errInvalidArg, "parent %s for moment %s not found", cp.parent, cp.name)
	}
	for ; p != nil; p = d.checkpoint(p.parent) {
		if p.parent == cp.name {
			return newErr(op, errInvalidArg, "parent %s would create cycle to %s", p.name, cp.name)
		}
	}
	return nil
}

func (d *Domain) checkpoint(name string) *checkpoint {
	for _, cp := range d.checkpoints {
		if cp.name == name {
			return cp
		}
	}
	return nil
}

// lookup is virDomainCheckpointLookupByName, the first call of every
// checkpoint method in libvirtconn.
func (d *Domain) lookup(name string) (*checkpoint, error) {
	if cp := d.checkpoint(name); cp != nil {
		return cp, nil
	}
	return nil, newErr("virDomainCheckpointLookupByName", errNoCheckpoint, "no domain checkpoint with matching name '%s'", name)
}

// Checkpoints lists the domain's checkpoints.
func (d *Domain) Checkpoints(ctx context.Context) ([]virt.Checkpoint, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("Checkpoints", "virDomainListAllCheckpoints"); err != nil {
		return nil, err
	}
	out := make([]virt.Checkpoint, 0, len(d.checkpoints))
	for _, cp := range d.checkpoints {
		out = append(out, cp.describe())
	}
	return out, nil
}

// Checkpoint describes one checkpoint.
func (d *Domain) Checkpoint(ctx context.Context, name string) (virt.Checkpoint, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("Checkpoint", "virDomainCheckpointLookupByName"); err != nil {
		return virt.Checkpoint{}, err
	}
	cp, err := d.lookup(name)
	if err != nil {
		return virt.Checkpoint{}, err
	}
	return cp.describe(), nil
}

func (cp *checkpoint) describe() virt.Checkpoint {
	out := virt.Checkpoint{Name: cp.name, Parent: cp.parent, Description: cp.description}
	if cp.created != 0 {
		out.Created = time.Unix(cp.created, 0)
	}
	for _, x := range cp.disks {
		out.Disks = append(out.Disks, virt.CheckpointDisk{Name: x.name, Checkpoint: x.checkpoint, Bitmap: x.bitmap})
	}
	return out
}

// BreakCheckpoint marks the bitmaps of checkpoint name inconsistent, as a
// QEMU that was killed leaves them: an incremental backup from it (or a
// redefinition with RedefineValidate) then fails with
// virt.ErrCheckpointInconsistent. An unknown name does nothing.
func (d *Domain) BreakCheckpoint(name string) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	for disk, bitmaps := range d.bitmaps {
		if _, ok := bitmaps[name]; ok {
			d.bitmaps[disk][name] = false
		}
	}
}
