package virtfake

import (
	"context"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// Domain is one domain of a Conn. Its state is guarded by the Conn's lock.
type Domain struct {
	c      *Conn
	name   string
	uuid   string
	def    *libvirtxml.Domain // the persistent definition
	live   *libvirtxml.Domain // what runs; a copy of def while shut off
	active bool
	id     int

	// bitmaps are the persistent bitmaps in each disk's image, by disk
	// target then name: true while consistent. They outlive the domain's
	// runs, as qcow2 bitmaps do, and checkpoints only point at them.
	bitmaps     map[string]map[string]bool
	checkpoints []*checkpoint // in creation order
	current     string        // the current checkpoint: the next one's parent
	storeSeq    uint          // libvirt numbers every storage source it adds

	job       *job
	completed *virt.Job // the last ended job's statistics, kept for readers
	record    *virt.BackupRecord
	holdPush  bool
	onPush    func(disk, target string) error
	subs      map[*subscriber]struct{}
	pulls     map[string]*pull // running block pulls, by disk

	agentConfigured bool // the domain has a guest agent channel
	agentUp         bool // and the guest runs the agent
	frozen          bool
	onFreeze        func(context.Context)
}

var _ virt.Domain = (*Domain)(nil)

// Name is the domain's name.
func (d *Domain) Name() string { return d.name }

// UUID is the domain's UUID.
func (d *Domain) UUID(ctx context.Context) (string, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("UUID", "virDomainGetUUIDString"); err != nil {
		return "", err
	}
	return d.uuid, nil
}

// State says whether the domain runs.
func (d *Domain) State(ctx context.Context) (virt.DomainState, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("State", "virDomainGetState"); err != nil {
		return virt.DomainState{}, err
	}
	if d.active {
		return virt.DomainState{Active: true, State: "running"}, nil
	}
	return virt.DomainState{State: "shut off"}, nil
}

// XML is the persistent definition (inactive) or the live one.
func (d *Domain) XML(ctx context.Context, inactive bool) (string, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("XML", "virDomainGetXMLDesc"); err != nil {
		return "", err
	}
	if inactive {
		return d.def.Marshal()
	}
	return d.liveXML().Marshal()
}

func (d *Domain) liveXML() *libvirtxml.Domain {
	x := copyDomain(d.live)
	if d.active {
		id := d.id
		x.ID = &id
	}
	return x
}

// Disks lists the disks of the live definition.
func (d *Domain) Disks(ctx context.Context) ([]virt.Disk, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("Disks", "virDomainGetXMLDesc"); err != nil {
		return nil, err
	}
	return virt.DisksOf(d.live), nil
}

// Start starts a shut-off domain; its checkpoints and bitmaps are still
// there, its job statistics too.
func (d *Domain) Start() {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	d.start()
}

func (d *Domain) start() {
	if d.active {
		return
	}
	d.active = true
	d.c.lastID++
	d.id = d.c.lastID
	d.live = copyDomain(d.def)
}

// Stop shuts the domain off as 'virsh destroy' does: a running backup job
// ends unsuccessfully (libvirt reports it cancelled, with no message and
// no per-disk events), and the live metadata, vbackup's job record with
// it, is gone.
func (d *Domain) Stop() {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if !d.active {
		return
	}
	if d.job != nil {
		d.end(d.job, endStopped, "")
	}
	d.active = false
	d.id = 0
	d.record = nil
	d.pulls = nil
	d.frozen = false
	d.live = copyDomain(d.def)
}

// diskByName finds a disk of def by target or source path, as libvirt's
// checkpoint code does.
func diskByName(def *libvirtxml.Domain, name string) *virt.Disk {
	for _, disk := range virt.DisksOf(def) {
		if disk.Target == name || (disk.Source != "" && disk.Source == name) {
			return &disk
		}
	}
	return nil
}

func diskByTarget(def *libvirtxml.Domain, target string) *virt.Disk {
	for _, disk := range virt.DisksOf(def) {
		if disk.Target == target {
			return &disk
		}
	}
	return nil
}

func diskXML(disk virt.Disk) libvirtxml.DomainDisk {
	bus := "virtio"
	if disk.Device == "cdrom" {
		bus = "sata"
	}
	x := libvirtxml.DomainDisk{
		Device: disk.Device,
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: disk.Format},
		Target: &libvirtxml.DomainDiskTarget{Dev: disk.Target, Bus: bus},
	}
	if disk.ReadOnly {
		x.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
	}
	switch disk.Type {
	case "block":
		x.Source = &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: disk.Source}}
	default:
		x.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: disk.Source}}
	}
	return x
}

// postParseDisk fills in what libvirt's QEMU driver does when a domain is
// defined: the device kind, and raw for a disk whose format is not given.
func postParseDisk(x *libvirtxml.DomainDisk) {
	if x.Device == "" {
		x.Device = "disk"
	}
	if x.Source != nil && (x.Source.File != nil || x.Source.Block != nil) {
		if x.Driver == nil {
			x.Driver = &libvirtxml.DomainDiskDriver{Name: "qemu"}
		}
		if x.Driver.Type == "" {
			x.Driver.Type = "raw"
		}
	}
}

// copyDomain is a deep copy, through the XML.
func copyDomain(def *libvirtxml.Domain) *libvirtxml.Domain {
	doc, err := def.Marshal()
	if err != nil {
		panic("virtfake: a domain definition does not marshal: " + err.Error())
	}
	out := &libvirtxml.Domain{}
	if err := out.Unmarshal(doc); err != nil {
		panic("virtfake: a domain definition does not read back: " + err.Error())
	}
	return out
}
