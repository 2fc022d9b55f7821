package xmlgen

import (
	"fmt"
	"path/filepath"
	"strings"
)

const (
	formatQcow2 = "qcow2"
	formatRaw   = "raw"
	typeFile    = "file"
	typeBlock   = "block"
)

// BackupDisk is one disk's part in a backup job, as --disk gives it. After
// AlignBackup, Type, Target or Scratch, and Format are filled in for every
// disk that takes part.
type BackupDisk struct {
	Name         string // disk target ("vda"): libvirt's backup XML knows disks by target only
	Skip         bool   // backup='no'
	Full         bool   // backupmode='full', even in an incremental job
	Incremental  string // backupmode incremental since this checkpoint, whatever the job's --incremental
	Type         string // what Target or Scratch is: "file" or "block"; "" is file
	Target       string // push: absolute path of the backup file or block device
	Format       string // push: the target's format, "qcow2" or "raw"; "" is the job's --format
	Scratch      string // pull: absolute path of the scratch file or block device (always qcow2)
	ExportName   string // pull: NBD export name; "" is the disk's target
	ExportBitmap string // pull, incremental: name of the exported dirty bitmap; "" is libvirt's backup-DISK
}

// backupDiskKeys lists --disk's keys in the order String writes them.
var backupDiskKeys = []string{"skip", "full", "type", "target", "format", "scratch", "incremental", "export", "bitmap"}

// ParseBackupDisk parses the argument of backup-begin's repeatable --disk:
// DISK[,KEY[=VALUE]]..., where ",," stands for a literal comma as in virsh's
// --diskspec. The keys:
//
//	skip                  leave the disk out (backup='no'); takes no other key
//	full                  copy the disk whole even when the job is --incremental
//	incremental=CP        copy what changed since checkpoint CP (this disk only)
//	target=/PATH          push: where the backup goes
//	format=qcow2|raw      push: the target's format
//	type=file|block       what target= or scratch= is (default file)
//	scratch=/PATH         pull: the scratch file or device
//	export=NAME           pull: the disk's NBD export name
//	bitmap=NAME           pull: the name of the exported dirty bitmap
//
// It refuses what no mode could use; AlignBackup refuses what the job's mode
// or the domain's disks cannot.
func ParseBackupDisk(s string) (BackupDisk, error) {
	fail := func(format string, args ...any) (BackupDisk, error) {
		return BackupDisk{}, fmt.Errorf("--disk %q: %s", s, fmt.Sprintf(format, args...))
	}
	fields := splitEscaped(s)
	d := BackupDisk{Name: fields[0]}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, value, hasValue := strings.Cut(f, "=")
		known := false
		for _, k := range backupDiskKeys {
			known = known || k == key
		}
		if !known {
			return fail("unknown key %q; keys are %s", key, strings.Join(backupDiskKeys, ", "))
		}
		if seen[key] {
			return fail("%s is given twice", key)
		}
		seen[key] = true
		switch key {
		case "skip", "full":
			if hasValue {
				return fail("%s takes no value: write %s,%s", key, d.Name, key)
			}
			d.Skip = d.Skip || key == "skip"
			d.Full = d.Full || key == "full"
			continue
		}
		if value == "" {
			return fail("%s needs a value: %s", key, keyUsage[key])
		}
		switch key {
		case "type":
			d.Type = value
		case "target":
			d.Target = value
		case "format":
			d.Format = value
		case "scratch":
			d.Scratch = value
		case "incremental":
			d.Incremental = value
		case "export":
			d.ExportName = value
		case "bitmap":
			d.ExportBitmap = value
		}
	}
	if err := d.check(); err != nil {
		return fail("%v", err)
	}
	return d, nil
}

var keyUsage = map[string]string{
	"type":        "type=file or type=block",
	"target":      "target=/ABSOLUTE/PATH",
	"format":      "format=qcow2 or format=raw",
	"scratch":     "scratch=/ABSOLUTE/PATH",
	"incremental": "incremental=CHECKPOINT",
	"export":      "export=NAME",
	"bitmap":      "bitmap=NAME",
}

// check refuses what libvirt's schema would refuse or silently ignore,
// whatever the job's mode.
func (d BackupDisk) check() error {
	switch {
	case d.Name == "":
		return fmt.Errorf("the disk name is empty; write DISK[,KEY=VALUE]..., e.g. vda,target=/backup/vda.qcow2")
	case d.Skip && d.Full:
		return fmt.Errorf("skip leaves the disk out and full copies it whole; give one of them")
	case d.Skip:
		if k := d.givenKeys(); len(k) > 0 {
			return fmt.Errorf("skip leaves the disk out, so %s= means nothing with it; drop one of them", k[0])
		}
		return nil
	case d.Full && d.Incremental != "":
		return fmt.Errorf("full copies the disk whole and incremental= only what changed; give one of them")
	case d.Incremental != "" && !checkpointName.MatchString(d.Incremental):
		return fmt.Errorf("incremental=%s does not name a checkpoint: names have only letters, digits, '_', '-' and '.', and do not start with '.'", d.Incremental)
	case d.Type != "" && d.Type != typeFile && d.Type != typeBlock:
		return fmt.Errorf("type must be file or block, not %q", d.Type)
	case d.Format != "" && d.Format != formatQcow2 && d.Format != formatRaw:
		return fmt.Errorf("format must be qcow2 or raw, not %q", d.Format)
	case d.Target != "" && d.Scratch != "":
		return fmt.Errorf("target= is for a push backup and scratch= for a pull backup; give one of them")
	case d.Format != "" && d.Scratch != "":
		return fmt.Errorf("format= is a push target's format; a pull backup's scratch is always qcow2")
	case (d.Target != "" || d.Format != "") && (d.ExportName != "" || d.ExportBitmap != ""):
		return fmt.Errorf("export= and bitmap= are for a pull backup, target= and format= for a push backup; give the keys of one mode")
	case d.Type != "" && d.Target == "" && d.Scratch == "":
		return fmt.Errorf("type= says what target= or scratch= is; give one of them too")
	}
	for _, p := range []struct{ key, path string }{{"target", d.Target}, {"scratch", d.Scratch}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return fmt.Errorf("%s must be an absolute path, not %q", p.key, p.path)
		}
		if strings.HasSuffix(p.path, "/") {
			return fmt.Errorf("%s must name a file or a device, not a directory: %q", p.key, p.path)
		}
	}
	return nil
}

// givenKeys names the keys with a value, in String's order.
func (d BackupDisk) givenKeys() []string {
	var keys []string
	for i, v := range d.values() {
		if v != "" {
			keys = append(keys, backupDiskKeys[i+2])
		}
	}
	return keys
}

// values holds the valued keys, in backupDiskKeys' order from "type" on.
func (d BackupDisk) values() []string {
	return []string{d.Type, d.Target, d.Format, d.Scratch, d.Incremental, d.ExportName, d.ExportBitmap}
}

// String renders d back in --disk syntax, so that ParseBackupDisk(d.String())
// gives d again; errors and notes show disks this way.
func (d BackupDisk) String() string {
	escape := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	var b strings.Builder
	b.WriteString(escape(d.Name))
	if d.Skip {
		b.WriteString(",skip")
	}
	if d.Full {
		b.WriteString(",full")
	}
	for i, v := range d.values() {
		if v != "" {
			b.WriteString("," + backupDiskKeys[i+2] + "=" + escape(v))
		}
	}
	return b.String()
}
