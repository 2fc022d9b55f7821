package virtfake

import (
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"vbackup/virt"
)

// backupDef is a <domainbackup> as libvirt holds it once parsed: every disk
// of the domain, with the defaults filled in by alignBackup.
type backupDef struct {
	pull        bool
	incremental string
	server      *backupServer // pull only
	disks       []*backupDisk
}

type backupServer struct {
	transport, name, socket, tls string
	port                         uint
}

type backupDisk struct {
	name         string
	backup       bool
	storeType    string // "file" or "block"
	path         string // target (push) or scratch (pull)
	format       string
	backupmode   string
	incremental  string
	exportname   string
	exportbitmap string
	index        uint

	created  bool   // libvirt created the store, and removes it as it removes such files
	state    string // "running", "completed", "failed", "cancelled" once the job started
	cur, end uint64
}

const backupSchema = "domainbackup.rng"

// parseBackup reads a <domainbackup> as virDomainBackupDefParseString
// does, with the few schema checks libvirt was seen to fail on.
func parseBackup(op, doc string) (*backupDef, error) {
	root, err := rootElement(doc)
	if err != nil {
		return nil, parseErr(op, "domain_backup", doc, err)
	}
	if root.Name.Local != "domainbackup" {
		return nil, newErr(op, errXML, "expecting root element of 'domainbackup', not '%s'", root.Name.Local)
	}
	mode, _ := attr(root, "mode")
	if mode != "" && mode != "push" && mode != "pull" {
		return nil, schemaErr(op, backupSchema, "Invalid attribute mode for element domainbackup")
	}
	x := &libvirtxml.DomainBackup{}
	if err := x.Unmarshal(doc); err != nil {
		return nil, parseErr(op, "domain_backup", doc, err)
	}
	var probe struct {
		Server *struct{} `xml:"server"`
	}
	_ = xml.Unmarshal([]byte(doc), &probe)
	def := &backupDef{pull: mode == "pull", incremental: x.Incremental}
	badDisks := schemaErr(op, backupSchema, "Extra element disks in interleave\nElement domainbackup failed to validate content")
	if !def.pull {
		if probe.Server != nil {
			return nil, schemaErr(op, backupSchema, "Extra element server in interleave\nElement domainbackup failed to validate content")
		}
		if x.Push != nil && x.Push.Disks != nil {
			for _, xd := range x.Push.Disks.Disks {
				disk, err := pushDisk(op, xd)
				if err != nil {
					return nil, err
				}
				if disk == nil {
					return nil, badDisks
				}
				def.disks = append(def.disks, disk)
			}
		}
		return def, nil
	}
	if s := x.Pull.Server; s != nil {
		switch {
		case s.UNIX != nil:
			if !filepath.IsAbs(s.UNIX.Socket) {
				return nil, newErr(op, errXML, "backup socket path '%s' must be absolute", s.UNIX.Socket)
			}
			def.server = &backupServer{transport: "unix", socket: s.UNIX.Socket, tls: s.TLS}
		case s.TCP != nil:
			def.server = &backupServer{transport: "tcp", name: s.TCP.Name, port: s.TCP.Port, tls: s.TLS}
		default:
			return nil, newErr(op, errConfigUnsup, "transport is not supported for <server>")
		}
	}
	if x.Pull.Disks != nil {
		for _, xd := range x.Pull.Disks.Disks {
			disk := &backupDisk{name: xd.Name, backup: xd.Backup != "no"}
			if disk.backup {
				if xd.Driver != nil && xd.Driver.Type != "" && xd.Driver.Type != "qcow2" {
					return nil, badDisks
				}
				disk.backupmode, disk.incremental = xd.BackupMode, xd.Incremental
				disk.exportname, disk.exportbitmap = xd.ExportName, xd.ExportBitmap
				if err := setStore(op, disk, xd.Scratch, xd.Driver); err != nil {
					return nil, err
				}
			}
			def.disks = append(def.disks, disk)
		}
	}
	return def, nil
}

// pushDisk reads one push disk; nil when the schema refuses it (a disk to
// back up must say its type).
func pushDisk(op string, xd libvirtxml.DomainBackupPushDisk) (*backupDisk, error) {
	disk := &backupDisk{name: xd.Name, backup: xd.Backup != "no"}
	if !disk.backup {
		return disk, nil
	}
	if xd.Target == nil {
		return nil, nil
	}
	disk.backupmode, disk.incremental = xd.BackupMode, xd.Incremental
	return disk, setStore(op, disk, xd.Target, xd.Driver)
}

func setStore(op string, disk *backupDisk, src *libvirtxml.DomainDiskSource, drv *libvirtxml.DomainBackupDiskDriver) error {
	if drv != nil {
		disk.format = drv.Type
	}
	if src == nil {
		// libvirt 9.0 makes an empty store of a listed disk without a
		// type, and never names it: QEMU is then given no file name.
		disk.storeType = "file"
		return nil
	}
	switch {
	case src.File != nil:
		disk.storeType, disk.path = "file", src.File.File
	case src.Block != nil:
		disk.storeType, disk.path = "block", src.Block.Dev
	default:
		return newErr(op, errXML, "unsupported disk backup type")
	}
	return nil
}

// alignBackup is virDomainBackupAlignDisks: the listed disks first, then
// every other disk of the domain, backed up (into a generated file name)
// only when no disk was listed.
func alignBackup(op string, def *backupDef, dom *libvirtxml.Domain, suffix string) error {
	domDisks := virt.DisksOf(dom)
	if len(domDisks) == 0 {
		return newErr(op, errConfigUnsup, "domain must have at least one disk to perform backup")
	}
	listed := map[string]bool{}
	for _, disk := range def.disks {
		dd := diskByTarget(dom, disk.name)
		if dd == nil {
			return newErr(op, errConfigUnsup, "no disk named '%s'", disk.name)
		}
		if listed[disk.name] {
			return newErr(op, errConfigUnsup, "disk '%s' specified twice", disk.name)
		}
		listed[disk.name] = true
		if disk.backupmode == "incremental" && disk.incremental == "" && def.incremental == "" {
			return newErr(op, errConfigUnsup, "'incremental' backup mode of disk '%s' requires setting 'incremental' field for disk or backup", disk.name)
		}
		if disk.backup && dd.Empty() {
			return newErr(op, errConfigUnsup, "disk '%s' has no media", disk.name)
		}
	}
	all := len(def.disks) == 0
	for _, dd := range domDisks {
		if listed[dd.Target] {
			continue
		}
		disk := &backupDisk{name: dd.Target}
		if all && !dd.Empty() && !dd.ReadOnly {
			if dd.Type != "file" {
				return newErr(op, errConfigUnsup, "refusing to generate file name for disk '%s'", dd.Target)
			}
			disk.backup = true
			disk.storeType, disk.path = "file", dd.Source+"."+suffix
		}
		def.disks = append(def.disks, disk)
	}
	for _, disk := range def.disks {
		if !disk.backup {
			continue
		}
		if disk.backupmode == "" {
			disk.backupmode = "full"
			if def.incremental != "" || disk.incremental != "" {
				disk.backupmode = "incremental"
			}
		}
		if disk.incremental == "" && disk.backupmode == "incremental" {
			disk.incremental = def.incremental
		}
	}
	return nil
}

// format is virDomainBackupDefFormat's layout.
func (def *backupDef) format() string {
	var b strings.Builder
	mode, store := "push", "target"
	if def.pull {
		mode, store = "pull", "scratch"
	}
	fmt.Fprintf(&b, "<domainbackup mode='%s'>\n", mode)
	if def.incremental != "" {
		fmt.Fprintf(&b, "  <incremental>%s</incremental>\n", escText(def.incremental))
	}
	if s := def.server; s != nil {
		fmt.Fprintf(&b, "  <server transport='%s'", s.transport)
		if s.tls != "" {
			fmt.Fprintf(&b, " tls='%s'", escAttr(s.tls))
		}
		if s.name != "" {
			fmt.Fprintf(&b, " name='%s'", escAttr(s.name))
		}
		if s.port != 0 {
			fmt.Fprintf(&b, " port='%d'", s.port)
		}
		if s.socket != "" {
			fmt.Fprintf(&b, " socket='%s'", escAttr(s.socket))
		}
		b.WriteString("/>\n")
	}
	b.WriteString("  <disks>\n")
	for _, disk := range def.disks {
		if !disk.backup {
			fmt.Fprintf(&b, "    <disk name='%s' backup='no'/>\n", escAttr(disk.name))
			continue
		}
		fmt.Fprintf(&b, "    <disk name='%s' backup='yes' type='%s' backupmode='%s'", escAttr(disk.name), disk.storeType, disk.backupmode)
		for _, a := range [][2]string{{"incremental", disk.incremental}, {"exportname", disk.exportname}, {"exportbitmap", disk.exportbitmap}} {
			if a[1] != "" {
				fmt.Fprintf(&b, " %s='%s'", a[0], escAttr(a[1]))
			}
		}
		if disk.index != 0 {
			fmt.Fprintf(&b, " index='%d'", disk.index)
		}
		b.WriteString(">\n")
		if disk.format != "" {
			fmt.Fprintf(&b, "      <driver type='%s'/>\n", escAttr(disk.format))
		}
		key := "file"
		if disk.storeType == "block" {
			key = "dev"
		}
		fmt.Fprintf(&b, "      <%s %s='%s'/>\n", store, key, escAttr(disk.path))
		b.WriteString("    </disk>\n")
	}
	b.WriteString("  </disks>\n</domainbackup>\n")
	return b.String()
}
