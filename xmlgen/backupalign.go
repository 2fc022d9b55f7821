package xmlgen

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"vbackup/virt"
)

// timestampLayout names files of a job begun without a checkpoint.
const timestampLayout = "20060102T150405Z"

// AlignBackup fits spec to the domain's disks before libvirt sees it, and
// names every file the job will write, so that a job libvirt would refuse,
// or accept and do wrong, is refused here with a reason and a way out. now
// names the files of a job without --checkpoint. It returns the spec to
// send, which lists every disk of the domain, in the domain's order, and
// notes for the user.
//
// Which disks take part follows libvirt (virDomainBackupAlignDisks): without
// --disk, every writable disk with a medium (and no CD-ROM); once a --disk
// other than skip is given, only the disks given. vbackup adds that --disk
// DISK,skip alone leaves the others as they were, so that it can leave one
// disk out of the default set; that an empty or read-only disk given by
// --disk is an error; that a disk that cannot carry a bitmap cannot take part
// in an incremental backup; and that at least one disk takes part.
//
// Every disk that takes part gets an explicit target (push) or scratch file
// (pull): libvirt 9.0 names files only for disks it is not given by name
// (one listed without <target> fails with "argument key 'filename' must not
// have null value"), and a --disk ...,skip lists them all. A file is named
// DIR/DOMAIN.DISK.SUFFIX.FORMAT with --target-dir (or
// DOMAIN.DISK.SUFFIX.scratch.qcow2 with --scratch-dir), else
// SOURCE.SUFFIX.FORMAT beside the disk's image, as libvirt would put it;
// SUFFIX is the --checkpoint name, or now in UTC as 20261124T120000Z.
func AlignBackup(spec BackupSpec, domain string, disks []virt.Disk, now time.Time) (BackupSpec, []string, error) {
	if len(disks) == 0 {
		return spec, nil, fmt.Errorf("domain %q has no disks: there is nothing to back up", domain)
	}
	if err := checkBackupJob(spec); err != nil {
		return spec, nil, err
	}

	listed := make(map[string]BackupDisk, len(spec.Disks))
	onlyListed := false // a --disk other than skip: the others stay out
	for _, d := range spec.Disks {
		disk, err := backupDiskByName(domain, disks, d.Name)
		if err != nil {
			return spec, nil, err
		}
		if _, dup := listed[d.Name]; dup {
			return spec, nil, fmt.Errorf("disk %q is given twice by --disk; give each disk once", d.Name)
		}
		if !d.Skip {
			onlyListed = true
			if disk.Empty() || disk.ReadOnly {
				return spec, nil, fmt.Errorf("--disk %q: disk %q is %s: there is nothing of it to back up; leave it out", d.String(), disk.Target, obstacle(disk))
			}
		}
		listed[d.Name] = d
	}

	// Who takes part, first: a way out of an error may name the others.
	type part struct {
		disk   virt.Disk
		d      BackupDisk
		listed bool
	}
	var parts []part
	var notes []string
	for _, disk := range disks {
		d, ok := listed[disk.Target]
		switch {
		case ok && d.Skip:
		case ok:
			parts = append(parts, part{disk, d, true})
		case onlyListed:
			if takesPartByDefault(disk) {
				notes = append(notes, fmt.Sprintf("disk %s is not named by --disk: left out of this backup", disk.Target))
			}
		case takesPartByDefault(disk):
			parts = append(parts, part{disk, BackupDisk{Name: disk.Target}, false})
		}
	}
	if len(parts) == 0 {
		return spec, nil, fmt.Errorf("no disk of domain %q takes part in this backup: every disk is skipped, empty or read-only", domain)
	}

	suffix := spec.Checkpoint
	if suffix == "" {
		suffix = now.UTC().Format(timestampLayout)
	}
	out := make(map[string]BackupDisk, len(disks))
	for _, p := range parts {
		if cp := p.d.incremental(spec); cp != "" && !p.disk.CanCarryBitmap() {
			var others []string
			for _, o := range parts {
				if o.disk.Target != p.disk.Target {
					others = append(others, "--disk "+o.d.String())
				}
			}
			return spec, nil, noBitmapForIncremental(p.disk, p.listed, others)
		}
		d, note, err := resolveFile(spec, domain, p.disk, p.d, suffix)
		if err != nil {
			return spec, nil, err
		}
		if note != "" {
			notes = append(notes, note)
		}
		out[d.Name] = d
	}

	aligned := spec
	aligned.Disks = make([]BackupDisk, 0, len(disks))
	for _, disk := range disks {
		d, ok := out[disk.Target]
		if !ok {
			d = BackupDisk{Name: disk.Target, Skip: true}
		}
		aligned.Disks = append(aligned.Disks, d)
	}
	if err := checkPaths(aligned, disks); err != nil {
		return spec, nil, err
	}
	if err := checkBackupSpec(aligned); err != nil {
		return spec, nil, err
	}
	return aligned, notes, nil
}

// takesPartByDefault is libvirt's rule for a backup without <disks>, plus
// CD-ROMs, which a user never means to back up.
func takesPartByDefault(disk virt.Disk) bool {
	return !disk.Empty() && !disk.ReadOnly && disk.Device != "cdrom"
}

// backupDiskByName finds a disk by target, as libvirt's backup XML names
// disks (virDomainDiskByTarget, unlike a checkpoint's, which also takes a
// source path).
func backupDiskByName(domain string, disks []virt.Disk, name string) (virt.Disk, error) {
	for _, d := range disks {
		if d.Target == name {
			return d, nil
		}
	}
	err := fmt.Sprintf("domain %q has no disk %q; its disks are %s", domain, name, targets(disks))
	for _, d := range disks {
		if d.Source != "" && d.Source == name {
			err += fmt.Sprintf(" (--disk names a disk by its target: %s is %s)", d.Target, d.Source)
			break
		}
	}
	return virt.Disk{}, fmt.Errorf("%s", err)
}

// noBitmapForIncremental explains why disk cannot take part in an
// incremental backup, and how to do without. libvirt itself would say
// "checkpoint inconsistent: missing or broken bitmap", which sends the user
// looking for a broken checkpoint.
func noBitmapForIncremental(disk virt.Disk, listed bool, others []string) error {
	msg := fmt.Sprintf("disk %q is %s: only qcow2 disks carry the checkpoint bitmaps an incremental backup reads", disk.Target, obstacle(disk))
	switch {
	case listed:
		return fmt.Errorf("%s; copy it whole with --disk %s,full, or leave it out", msg, disk.Target)
	case len(others) == 0:
		return fmt.Errorf("%s; copy it whole with a full backup (without --incremental)", msg)
	}
	return fmt.Errorf("%s; leave it out with --disk %s,skip, or copy it whole with --disk %s,full %s",
		msg, disk.Target, disk.Target, strings.Join(others, " "))
}

// resolveFile fills in d's type, format and the path of its target (push)
// or scratch file (pull).
func resolveFile(spec BackupSpec, domain string, disk virt.Disk, d BackupDisk, suffix string) (BackupDisk, string, error) {
	if d.Type == "" {
		d.Type = typeFile
	}
	if !spec.Pull && d.Format == "" {
		d.Format = spec.Format
		if d.Format == "" {
			d.Format = formatQcow2
		}
	}
	given, dir, flag, what := &d.Target, spec.TargetDir, "--target-dir", "backup"
	ext := "." + d.Format
	if spec.Pull {
		given, dir, flag, what = &d.Scratch, spec.ScratchDir, "--scratch-dir", "scratch file"
		ext = ".scratch." + formatQcow2
	}
	switch {
	case *given != "":
		return d, "", nil
	case domain == "" && dir != "":
		return d, "", fmt.Errorf("no domain name to name the files in %s", flag)
	case dir != "":
		*given = filepath.Join(dir, domain+"."+disk.Target+"."+suffix+ext)
		return d, "", nil
	case disk.Type == typeFile && filepath.IsAbs(disk.Source):
		*given = disk.Source + "." + suffix + ext
		note := fmt.Sprintf("no %s: the %s of %s goes beside its image, to %s", flag, what, disk.Target, *given)
		if spec.Pull {
			note += " (libvirt deletes it when the job ends)"
		}
		return d, note, nil
	}
	key := "target"
	if spec.Pull {
		key = "scratch"
	}
	return d, "", fmt.Errorf("disk %q is %s (%s): vbackup cannot put a %s beside it; give %s DIR or --disk %s,%s=/PATH, or leave it out with --disk %s,skip",
		disk.Target, sourceKind(disk), disk.Source, what, flag, disk.Target, key, disk.Target)
}

func sourceKind(disk virt.Disk) string {
	switch disk.Type {
	case typeBlock:
		return "a block device"
	case "network":
		return "a network disk"
	case "volume":
		return "a storage pool volume"
	case "dir":
		return "a host directory"
	}
	return fmt.Sprintf("of type %q", disk.Type)
}

// checkPaths refuses a job that would write two disks' data to one file or
// device, or over a disk of the domain itself.
func checkPaths(spec BackupSpec, disks []virt.Disk) error {
	key := "target"
	if spec.Pull {
		key = "scratch"
	}
	written := map[string]string{} // path: disk
	for _, d := range spec.Disks {
		path := d.Target
		if spec.Pull {
			path = d.Scratch
		}
		if d.Skip || path == "" {
			continue
		}
		if other, dup := written[path]; dup {
			return fmt.Errorf("disks %q and %q would both be written to %s; give each its own %s", other, d.Name, path, key)
		}
		written[path] = d.Name
		for _, disk := range disks {
			if disk.Source == path {
				return fmt.Errorf("the %s of disk %q, %s, is the image of disk %q: choose another path", key, d.Name, path, disk.Target)
			}
		}
	}
	return nil
}
