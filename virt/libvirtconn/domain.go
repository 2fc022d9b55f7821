package libvirtconn

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// Domain is one domain of a Conn.
type Domain struct {
	c    *Conn
	lv   *libvirt.Domain // guarded by c.lvMu
	name string
	uuid string // to look it up again after a reconnection
}

var _ virt.Domain = (*Domain)(nil)

// Name is the domain's name.
func (d *Domain) Name() string { return d.name }

// UUID is the domain's UUID, as virsh domuuid prints it.
func (d *Domain) UUID(ctx context.Context) (string, error) {
	var id string
	err := d.c.call(ctx, "virDomainGetUUIDString", d.name, func() (err error) {
		id, err = d.lv.GetUUIDString()
		return err
	})
	return id, err
}

// XML is the domain's definition, without secrets.
func (d *Domain) XML(ctx context.Context, inactive bool) (string, error) {
	var flags libvirt.DomainXMLFlags
	if inactive {
		flags = libvirt.DOMAIN_XML_INACTIVE
	}
	var doc string
	err := d.c.call(ctx, "virDomainGetXMLDesc", d.name, func() (err error) {
		doc, err = d.lv.GetXMLDesc(flags)
		return err
	})
	return doc, err
}

var stateNames = map[libvirt.DomainState]string{
	libvirt.DOMAIN_NOSTATE:     "no state",
	libvirt.DOMAIN_RUNNING:     "running",
	libvirt.DOMAIN_BLOCKED:     "idle",
	libvirt.DOMAIN_PAUSED:      "paused",
	libvirt.DOMAIN_SHUTDOWN:    "in shutdown",
	libvirt.DOMAIN_SHUTOFF:     "shut off",
	libvirt.DOMAIN_CRASHED:     "crashed",
	libvirt.DOMAIN_PMSUSPENDED: "pmsuspended",
}

// State says whether the domain runs, in virsh domstate's words.
func (d *Domain) State(ctx context.Context) (virt.DomainState, error) {
	var st libvirt.DomainState
	err := d.c.call(ctx, "virDomainGetState", d.name, func() (err error) {
		st, _, err = d.lv.GetState()
		return err
	})
	if err != nil {
		return virt.DomainState{}, err
	}
	active := st != libvirt.DOMAIN_SHUTOFF && st != libvirt.DOMAIN_CRASHED && st != libvirt.DOMAIN_NOSTATE
	return virt.DomainState{Active: active, State: stateNames[st]}, nil
}

// Disks lists the domain's disks from its live XML.
func (d *Domain) Disks(ctx context.Context) ([]virt.Disk, error) {
	var doc string
	err := d.c.call(ctx, "virDomainGetXMLDesc", d.name, func() (err error) {
		doc, err = d.lv.GetXMLDesc(0)
		return err
	})
	if err != nil {
		return nil, err
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(doc); err != nil {
		return nil, fmt.Errorf("domain %s: reading its XML: %w", d.name, err)
	}
	return virt.DisksOf(&def), nil
}

// CreateCheckpoint creates (or, with Redefine, restores) a checkpoint from
// its XML and returns its name.
func (d *Domain) CreateCheckpoint(ctx context.Context, doc string, flags virt.CreateFlags) (string, error) {
	var lf libvirt.DomainCheckpointCreateFlags
	if flags.Redefine {
		lf |= libvirt.DOMAIN_CHECKPOINT_CREATE_REDEFINE
	}
	if flags.RedefineValidate {
		lf |= libvirt.DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE
	}
	if flags.Quiesce {
		lf |= libvirt.DOMAIN_CHECKPOINT_CREATE_QUIESCE
	}
	var cp *libvirt.DomainCheckpoint
	err := d.c.call(ctx, "virDomainCheckpointCreateXML", d.name, func() (err error) {
		cp, err = d.lv.CreateCheckpointXML(doc, lf)
		return err
	})
	if err != nil {
		return "", err
	}
	defer cp.Free()
	var name string
	err = d.c.call(ctx, "virDomainCheckpointGetName", d.name, func() (err error) {
		name, err = cp.GetName()
		return err
	})
	return name, err
}

// Checkpoints lists every checkpoint of the domain, one XML read each (as
// virsh checkpoint-list does: the list call carries no parent or time).
func (d *Domain) Checkpoints(ctx context.Context) ([]virt.Checkpoint, error) {
	var cps []libvirt.DomainCheckpoint
	err := d.c.call(ctx, "virDomainListAllCheckpoints", d.name, func() (err error) {
		cps, err = d.lv.ListAllCheckpoints(0)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		for i := range cps {
			_ = cps[i].Free()
		}
	}()
	out := make([]virt.Checkpoint, 0, len(cps))
	for i := range cps {
		cp, err := d.describe(ctx, &cps[i], "")
		if err != nil {
			return nil, err
		}
		out = append(out, cp)
	}
	return out, nil
}

// Checkpoint describes one checkpoint.
func (d *Domain) Checkpoint(ctx context.Context, name string) (virt.Checkpoint, error) {
	cp, err := d.lookup(ctx, name)
	if err != nil {
		return virt.Checkpoint{}, err
	}
	defer cp.Free()
	return d.describe(ctx, cp, name)
}

// CheckpointXML is the checkpoint's XML as libvirt formats it.
func (d *Domain) CheckpointXML(ctx context.Context, name string, flags virt.XMLFlags) (string, error) {
	cp, err := d.lookup(ctx, name)
	if err != nil {
		return "", err
	}
	defer cp.Free()
	var lf libvirt.DomainCheckpointXMLFlags
	if flags.NoDomain {
		lf |= libvirt.DOMAIN_CHECKPOINT_XML_NO_DOMAIN
	}
	if flags.Size {
		lf |= libvirt.DOMAIN_CHECKPOINT_XML_SIZE
	}
	if flags.SecurityInfo {
		lf |= libvirt.DOMAIN_CHECKPOINT_XML_SECURE
	}
	var doc string
	err = d.c.call(ctx, "virDomainCheckpointGetXMLDesc", name, func() (err error) {
		doc, err = cp.GetXMLDesc(lf)
		return err
	})
	return doc, err
}

// DeleteCheckpoint deletes a checkpoint (and, as flags say, its children);
// libvirt merges each deleted bitmap into its parent's.
func (d *Domain) DeleteCheckpoint(ctx context.Context, name string, flags virt.DeleteFlags) error {
	cp, err := d.lookup(ctx, name)
	if err != nil {
		return err
	}
	defer cp.Free()
	var lf libvirt.DomainCheckpointDeleteFlags
	if flags.Children {
		lf |= libvirt.DOMAIN_CHECKPOINT_DELETE_CHILDREN
	}
	if flags.ChildrenOnly {
		lf |= libvirt.DOMAIN_CHECKPOINT_DELETE_CHILDREN_ONLY
	}
	if flags.MetadataOnly {
		lf |= libvirt.DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY
	}
	return d.c.call(ctx, "virDomainCheckpointDelete", name, func() error {
		return cp.Delete(lf)
	})
}

func (d *Domain) lookup(ctx context.Context, name string) (*libvirt.DomainCheckpoint, error) {
	var cp *libvirt.DomainCheckpoint
	err := d.c.call(ctx, "virDomainCheckpointLookupByName", name, func() (err error) {
		cp, err = d.lv.CheckpointLookupByName(name, 0)
		return err
	})
	return cp, err
}

func (d *Domain) describe(ctx context.Context, cp *libvirt.DomainCheckpoint, name string) (virt.Checkpoint, error) {
	var doc string
	err := d.c.call(ctx, "virDomainCheckpointGetXMLDesc", name, func() (err error) {
		doc, err = cp.GetXMLDesc(libvirt.DOMAIN_CHECKPOINT_XML_NO_DOMAIN)
		return err
	})
	if err != nil {
		return virt.Checkpoint{}, err
	}
	return parseCheckpoint(doc)
}

func parseCheckpoint(doc string) (virt.Checkpoint, error) {
	var def libvirtxml.DomainCheckpoint
	if err := def.Unmarshal(doc); err != nil {
		return virt.Checkpoint{}, fmt.Errorf("reading checkpoint XML: %w", err)
	}
	cp := virt.Checkpoint{Name: def.Name, Description: def.Description}
	if def.Parent != nil {
		cp.Parent = def.Parent.Name
	}
	if def.CreationTime != "" {
		secs, err := strconv.ParseInt(def.CreationTime, 10, 64)
		if err != nil {
			return virt.Checkpoint{}, fmt.Errorf("checkpoint %s: creation time %q: %w", def.Name, def.CreationTime, err)
		}
		cp.Created = time.Unix(secs, 0)
	}
	if def.Disks != nil {
		for _, x := range def.Disks.Disks {
			cp.Disks = append(cp.Disks, virt.CheckpointDisk{
				Name: x.Name, Checkpoint: x.Checkpoint, Bitmap: x.Bitmap,
			})
		}
	}
	return cp, nil
}
