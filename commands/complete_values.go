package commands

import (
	"strings"

	"vbackup/chain"
)

// flagValue sets what the value of flag fi takes.
func (r *request) flagValue(fi flagInfo, values map[string][]string, seen map[string]bool) {
	switch fi.name {
	case "connect":
		r.kind, r.static = wantStatic, []candidate{
			{"qemu:///system", "the system's QEMU/KVM daemon"},
			{"qemu:///session", "your own session daemon"},
		}
		return
	case "format":
		r.kind, r.static = wantStatic, []candidate{{"qcow2", ""}, {"raw", ""}}
		return
	case "server":
		r.serverValue()
		return
	case "level":
		r.kind, r.static = wantStatic, []candidate{
			{chain.WantAuto, "incremental after a usable backup in DIR, else full (the default)"},
			{chain.WantFull, "copy every disk whole: start a new chain"},
			{chain.WantInc, "copy what changed since the last backup in DIR"},
		}
		return
	case "quiesce":
		r.kind, r.static = wantStatic, []candidate{
			{"auto", "freeze the guest's filesystems when its agent answers (the default)"},
			{"yes", "freeze them, or fail before anything changes"},
			{"no", "never freeze: crash-consistent"},
		}
		return
	case "at":
		r.kind, r.from = wantBackups, last(values["from"])
		return
	case "disk":
		r.diskValue(fi, values, seen)
		return
	case "diskspec":
		r.specValue(checkpointDiskKeys, values["diskspec"])
		return
	}
	switch fi.placeholder {
	case "CHECKPOINT":
		if r.domain != "" {
			r.kind = wantCheckpoints
		}
	case "FILE":
		r.kind = wantFiles
	case "DIR", "OUTDIR":
		r.kind = wantDirs
	}
}

// diskValue completes --disk, which means a disk of the domain in most
// commands, a disk of a backup in restore and the commands that read a
// backup in place, and a whole disk spec in
// backup-begin.
func (r *request) diskValue(fi flagInfo, values map[string][]string, seen map[string]bool) {
	switch {
	case fi.placeholder == "SPEC":
		r.specValue(backupDiskKeys(seen["pull"]), values["disk"])
		return
	case r.command == "restore" || r.command == "mount" || r.command == "ls" || r.command == "cat" || r.command == "serve":
		r.kind, r.from, r.at = wantBackupDisks, last(values["from"]), last(values["at"])
	case r.domain != "":
		r.kind = wantDisks
	}
	for _, v := range values["disk"] {
		r.named[v] = true
	}
}

// last is the value a flag given several times ends with, "" if none.
func last(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[len(values)-1]
}

// serverValue completes --server: its two forms, then a socket path.
func (r *request) serverValue() {
	if strings.HasPrefix(r.partial, "unix:") {
		r.kind, r.prefix = wantFiles, r.prefix+"unix:"
		return
	}
	r.kind, r.static = wantStatic, []candidate{
		{"unix:", "a unix socket: unix:/ABSOLUTE/PATH"},
		{"tcp:", "TCP: tcp:HOST[:PORT]"},
	}
}

// specKey is one key of a --disk or --diskspec value.
type specKey struct {
	name     string
	desc     string
	values   []string // the fixed values it takes, if any
	path     bool     // it takes a path
	cp       bool     // it takes a checkpoint name
	flag     bool     // it takes no value
	excludes []string // keys (or key=value) it cannot stand with
}

// backupDiskKeys are the keys of backup-begin --disk (xmlgen.ParseBackupDisk),
// less those the job's mode refuses.
func backupDiskKeys(pull bool) []specKey {
	keys := []specKey{
		{name: "skip", desc: "leave this disk out of the backup", flag: true,
			excludes: []string{"full", "type", "target", "format", "scratch", "incremental", "export", "bitmap"}},
		{name: "full", desc: "copy the whole disk, even in an incremental backup", flag: true, excludes: []string{"skip", "incremental"}},
		{name: "incremental", desc: "copy what changed since this checkpoint (this disk only)", cp: true, excludes: []string{"skip", "full"}},
		{name: "type", desc: "what target= or scratch= is: file or block", values: []string{"file", "block"}, excludes: []string{"skip"}},
	}
	if pull {
		return append(keys,
			specKey{name: "scratch", desc: "pull: the scratch file, an absolute path", path: true, excludes: []string{"skip"}},
			specKey{name: "export", desc: "pull: the disk's NBD export name", excludes: []string{"skip"}},
			specKey{name: "bitmap", desc: "pull: the name of the exported dirty bitmap", excludes: []string{"skip"}},
		)
	}
	return append(keys,
		specKey{name: "target", desc: "push: the backup file, an absolute path", path: true, excludes: []string{"skip"}},
		specKey{name: "format", desc: "push: the target's format, qcow2 or raw", values: []string{"qcow2", "raw"}, excludes: []string{"skip"}},
	)
}

// checkpointDiskKeys are the keys of checkpoint-create-as --diskspec
// (xmlgen.ParseDiskSpec).
var checkpointDiskKeys = []specKey{
	{name: "checkpoint", desc: "whether the disk carries a bitmap: bitmap or no", values: []string{"bitmap", "no"}},
	{name: "bitmap", desc: "the bitmap's name (default: the checkpoint's)", excludes: []string{"checkpoint=no"}},
}

// specValue completes DISK[,KEY[=VALUE]]...: a disk target, then the keys
// not given yet, then a key's value. ",," is a literal comma, as in virsh.
func (r *request) specValue(keys []specKey, earlier []string) {
	for _, v := range earlier {
		r.named[specFields(v)[0]] = true
	}
	fields := specFields(r.partial)
	if len(fields) == 1 {
		r.kind = wantDisks
		return
	}
	last := fields[len(fields)-1]
	done := len(r.partial) - len(last)
	r.prefix, r.partial = r.prefix+r.partial[:done], last

	used := map[string]bool{} // by key, and by key=value
	for _, f := range fields[1 : len(fields)-1] {
		k, _, _ := strings.Cut(f, "=")
		used[k], used[f] = true, true
	}
	if name, value, ok := strings.Cut(last, "="); ok {
		for _, k := range keys {
			if k.name != name || k.flag {
				continue
			}
			r.prefix, r.partial = r.prefix+name+"=", value
			switch {
			case k.path:
				r.kind = wantFiles
			case k.cp && r.domain != "":
				r.kind = wantCheckpoints
			case len(k.values) > 0:
				r.kind = wantStatic
				for _, v := range k.values {
					r.static = append(r.static, candidate{value: v})
				}
			}
		}
		return
	}
	r.kind = wantStatic
	for _, k := range keys {
		if used[k.name] || excluded(k, used) {
			continue
		}
		v := k.name
		if !k.flag {
			v += "="
		}
		r.static = append(r.static, candidate{value: v, desc: k.desc})
	}
}

func excluded(k specKey, used map[string]bool) bool {
	for _, e := range k.excludes {
		if used[e] {
			return true
		}
	}
	return false
}

// specFields splits a spec at its commas, leaving ",," (a literal comma)
// inside its field.
func specFields(s string) []string {
	var fields []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			i++
			continue
		}
		fields = append(fields, s[start:i])
		start = i + 1
	}
	return append(fields, s[start:])
}
