package xmlgen

import (
	"fmt"
	"path/filepath"

	"libvirt.org/go/libvirtxml"
)

// BackupSpec is what a user asks of a backup job: backup-begin's flags.
type BackupSpec struct {
	Pull        bool         // libvirt serves the disks over NBD for a reader; otherwise it writes the backups itself (push)
	Incremental string       // --incremental CP: copy only what changed since checkpoint CP, unless a disk says otherwise
	Disks       []BackupDisk // --disk; none: every writable disk with a medium takes part
	TargetDir   string       // push: --target-dir, where the backups go
	Format      string       // push: --format of the targets, "qcow2" or "raw"; "" is qcow2
	ScratchDir  string       // pull: --scratch-dir, where the scratch files go
	Server      *Server      // pull: --server (and --tls)
	Checkpoint  string       // --checkpoint: the checkpoint begun with the job; it names the files
}

// Targets lists the files the job will create, for the caller to make sure
// none exists yet (libvirt refuses to write over one): push targets and pull
// scratch files of type file. Block devices must exist and are not listed.
// It is complete only for a spec from AlignBackup.
func (s BackupSpec) Targets() []string {
	var files []string
	for _, d := range s.Disks {
		path := d.Target
		if s.Pull {
			path = d.Scratch
		}
		if !d.Skip && d.Type != typeBlock && path != "" {
			files = append(files, path)
		}
	}
	return files
}

// Backup builds the document for spec as it stands; BackupXML checks spec
// first. A disk that takes part always says its type, as the schema wants.
func Backup(spec BackupSpec) *libvirtxml.DomainBackup {
	// Neither Push nor Pull would marshal to nothing at all, which libvirt
	// cannot parse: the zero spec is a push of every disk.
	b := &libvirtxml.DomainBackup{Incremental: spec.Incremental}
	if !spec.Pull {
		b.Push = &libvirtxml.DomainBackupPush{}
		if len(spec.Disks) > 0 {
			b.Push.Disks = &libvirtxml.DomainBackupPushDisks{}
			for _, d := range spec.Disks {
				b.Push.Disks.Disks = append(b.Push.Disks.Disks, pushDisk(d))
			}
		}
		return b
	}
	b.Pull = &libvirtxml.DomainBackupPull{}
	if s := spec.Server; s != nil {
		b.Pull.Server = &libvirtxml.DomainBackupPullServer{}
		if s.TLS {
			b.Pull.Server.TLS = "yes"
		}
		if s.Socket != "" {
			b.Pull.Server.UNIX = &libvirtxml.DomainBackupPullServerUNIX{Socket: s.Socket}
		} else {
			b.Pull.Server.TCP = &libvirtxml.DomainBackupPullServerTCP{Name: s.Host, Port: uint(s.Port)}
		}
	}
	if len(spec.Disks) > 0 {
		b.Pull.Disks = &libvirtxml.DomainBackupPullDisks{}
		for _, d := range spec.Disks {
			b.Pull.Disks.Disks = append(b.Pull.Disks.Disks, pullDisk(d))
		}
	}
	return b
}

func pushDisk(d BackupDisk) libvirtxml.DomainBackupPushDisk {
	if d.Skip {
		return libvirtxml.DomainBackupPushDisk{Name: d.Name, Backup: "no"}
	}
	out := libvirtxml.DomainBackupPushDisk{
		Name:        d.Name,
		Backup:      "yes",
		BackupMode:  backupMode(d),
		Incremental: d.Incremental,
		Target:      diskSource(d.Type, d.Target),
	}
	if d.Format != "" {
		out.Driver = &libvirtxml.DomainBackupDiskDriver{Type: d.Format}
	}
	return out
}

func pullDisk(d BackupDisk) libvirtxml.DomainBackupPullDisk {
	if d.Skip {
		return libvirtxml.DomainBackupPullDisk{Name: d.Name, Backup: "no"}
	}
	out := libvirtxml.DomainBackupPullDisk{
		Name:         d.Name,
		Backup:       "yes",
		BackupMode:   backupMode(d),
		Incremental:  d.Incremental,
		ExportName:   d.ExportName,
		ExportBitmap: d.ExportBitmap,
		Scratch:      diskSource(d.Type, d.Scratch),
	}
	if d.Scratch != "" {
		out.Driver = &libvirtxml.DomainBackupDiskDriver{Type: formatQcow2}
	}
	return out
}

// backupMode is set only for full: libvirt takes a disk with an incremental
// (its own or the job's) to be incremental.
func backupMode(d BackupDisk) string {
	if d.Full {
		return "full"
	}
	return ""
}

// diskSource gives the <target> or <scratch> of a disk that takes part. It
// is never nil, as libvirtxml writes a disk's type attribute only from it;
// with no path it writes no element.
func diskSource(typ, path string) *libvirtxml.DomainDiskSource {
	if typ == typeBlock {
		return &libvirtxml.DomainDiskSource{Block: &libvirtxml.DomainDiskSourceBlock{Dev: path}}
	}
	return &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}}
}

// BackupXML returns the <domainbackup> document for spec, indented as
// libvirt indents its own, ending in a newline. It refuses what libvirt's
// schema would, and what libvirt would accept but not do, so the user learns
// which option was wrong.
func BackupXML(spec BackupSpec) (string, error) {
	if err := checkBackupSpec(spec); err != nil {
		return "", err
	}
	doc, err := Backup(spec).Marshal()
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	return doc + "\n", nil
}

// checkBackupSpec checks what needs no knowledge of the domain.
func checkBackupSpec(spec BackupSpec) error {
	if err := checkBackupJob(spec); err != nil {
		return err
	}
	seen := map[string]bool{}
	exports := map[string]string{} // export name: disk
	for _, d := range spec.Disks {
		if seen[d.Name] {
			return fmt.Errorf("disk %q is given twice by --disk; give each disk once", d.Name)
		}
		seen[d.Name] = true
		if !spec.Pull || d.Skip {
			continue
		}
		export := d.ExportName
		if export == "" {
			export = d.Name
		}
		if other, dup := exports[export]; dup {
			return fmt.Errorf("disks %q and %q would both be exported as %q; give one of them another name with export=NAME", other, d.Name, export)
		}
		exports[export] = d.Name
	}
	return nil
}

// checkBackupJob checks the job's options and each --disk on its own
// against the job's mode.
func checkBackupJob(spec BackupSpec) error {
	switch {
	case spec.Format != "" && spec.Format != formatQcow2 && spec.Format != formatRaw:
		return fmt.Errorf("--format must be qcow2 or raw, not %q", spec.Format)
	case spec.Incremental != "" && !checkpointName.MatchString(spec.Incremental):
		return fmt.Errorf("--incremental %q does not name a checkpoint: names have only letters, digits, '_', '-' and '.', and do not start with '.'", spec.Incremental)
	case spec.Checkpoint != "" && !checkpointName.MatchString(spec.Checkpoint):
		return fmt.Errorf("checkpoint name %q: use only letters, digits, '_', '-' and '.', and do not start with '.'", spec.Checkpoint)
	case spec.Checkpoint != "" && spec.Checkpoint == spec.Incremental:
		return fmt.Errorf("--checkpoint %q is the checkpoint this backup starts from (--incremental); the new checkpoint needs a name of its own", spec.Checkpoint)
	case spec.Pull && spec.Server == nil:
		return fmt.Errorf("a pull backup needs --server %s, where libvirt's NBD server listens", serverSyntax)
	case spec.Pull && spec.TargetDir != "":
		return fmt.Errorf("--target-dir is for a push backup; a pull backup writes only scratch files: give --scratch-dir")
	case spec.Pull && spec.Format == formatRaw:
		return fmt.Errorf("--format is for a push backup's targets; a pull backup's scratch files are always qcow2")
	case !spec.Pull && spec.Server != nil:
		return fmt.Errorf("--server is for a pull backup; add --pull, or drop --server")
	case !spec.Pull && spec.ScratchDir != "":
		return fmt.Errorf("--scratch-dir is for a pull backup (--pull); a push backup writes to --target-dir")
	}
	for _, dir := range []struct{ flag, path string }{{"--target-dir", spec.TargetDir}, {"--scratch-dir", spec.ScratchDir}} {
		if dir.path != "" && !filepath.IsAbs(dir.path) {
			return fmt.Errorf("%s must be an absolute path, not %q", dir.flag, dir.path)
		}
	}
	if spec.Server != nil {
		if err := spec.Server.check(); err != nil {
			return err
		}
	}
	for _, d := range spec.Disks {
		if err := d.check(); err != nil {
			return fmt.Errorf("--disk %q: %w", d.String(), err)
		}
		if err := d.checkMode(spec.Pull); err != nil {
			return fmt.Errorf("--disk %q: %w", d.String(), err)
		}
		// libvirt accepts it and exports no bitmap: the reader would find
		// none and might take the whole disk for changed, or nothing.
		if d.ExportBitmap != "" && d.incremental(spec) == "" {
			return fmt.Errorf("--disk %q: bitmap= names the dirty bitmap of an incremental backup, but this disk's backup is full; add incremental=CHECKPOINT or --incremental CHECKPOINT", d.String())
		}
	}
	return nil
}

// incremental is the checkpoint d's backup starts from: its own, or the
// job's unless d is full; "" for a full backup.
func (d BackupDisk) incremental(spec BackupSpec) string {
	switch {
	case d.Incremental != "":
		return d.Incremental
	case d.Full:
		return ""
	}
	return spec.Incremental
}

// checkMode refuses keys of the other mode.
func (d BackupDisk) checkMode(pull bool) error {
	switch {
	case pull && (d.Target != "" || d.Format != ""):
		return fmt.Errorf("target= and format= are for a push backup; a pull backup takes scratch=")
	case !pull && d.Scratch != "":
		return fmt.Errorf("scratch= is for a pull backup (--pull); a push backup takes target=")
	case !pull && (d.ExportName != "" || d.ExportBitmap != ""):
		return fmt.Errorf("export= and bitmap= name what a pull backup (--pull) serves over NBD; a push backup has no export")
	}
	return nil
}
