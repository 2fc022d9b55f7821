package chain

import (
	"fmt"
	"strings"
)

// Levels a user can ask for.
const (
	WantAuto = "auto"
	WantFull = "full"
	WantInc  = "inc"
)

// DiskInfo is what the decision needs of a disk the domain has now.
type DiskInfo struct {
	Name      string
	CanBitmap bool   // a checkpoint can track it (a qcow2 image)
	Why       string // when it cannot, why, e.g. "a raw disk"
}

// Decision is the level of a backup and of each disk in it.
type Decision struct {
	Level  string       // incremental when any disk is
	Reason string       // why, for the user
	From   *Backup      // the backup an incremental builds on
	Disks  []DiskChoice // in the domain's order
	Ended  []string     // disks of the last backup the domain no longer has
}

// DiskChoice is one disk's level.
type DiskChoice struct {
	Name   string
	Level  string
	Reason string // set when a disk's level differs from what the backup's level suggests
}

// Decide picks full or incremental. last is the newest backup in the store
// (nil for none); lastOK says whether its checkpoint is usable in libvirt,
// and lastWhy, when it is not, why. domain names the domain in messages.
func Decide(want, domain string, last *Backup, lastOK bool, lastWhy string, disks []DiskInfo) (Decision, error) {
	var d Decision
	full := func(reason string) Decision {
		d.Level, d.Reason = Full, reason
		for _, disk := range disks {
			c := DiskChoice{Name: disk.Name, Level: Full}
			if !disk.CanBitmap {
				c.Reason = disk.Why + copiedWhole
			}
			d.Disks = append(d.Disks, c)
		}
		return d
	}
	switch {
	case want != WantAuto && want != WantFull && want != WantInc:
		return d, fmt.Errorf("--level %q: use auto, full or inc", want)
	case len(disks) == 0:
		return d, fmt.Errorf("domain %q has no disk to back up", domain)
	case want == WantFull:
		return full("--level full"), nil
	case last == nil && want == WantInc:
		return d, fmt.Errorf("there is no backup of domain %q to build on: the first backup is full; use --level auto or full", domain)
	case last == nil:
		return full("no backup of the domain in this folder yet"), nil
	case !lastOK && want == WantInc:
		return d, fmt.Errorf("the last backup, %s, cannot be built on: %s; use --level full (or auto)", last.Name(), lastWhy)
	case !lastOK:
		return full(fmt.Sprintf("the last backup's checkpoint %s cannot be built on: %s", last.Name(), lastWhy)), nil
	}
	d.From = last
	for _, disk := range disks {
		c := DiskChoice{Name: disk.Name, Level: Incremental}
		prev, had := last.Disk(disk.Name)
		switch {
		case !disk.CanBitmap:
			c.Level, c.Reason = Full, disk.Why+copiedWhole
		case !had:
			c.Level, c.Reason = Full, "new since the last backup"
		case !prev.Bitmap:
			c.Level, c.Reason = Full, "the last backup's checkpoint does not track it"
		}
		if c.Level == Incremental {
			d.Level = Incremental
		}
		d.Disks = append(d.Disks, c)
	}
	for _, prev := range last.Disks {
		if !hasDisk(disks, prev.Name) {
			d.Ended = append(d.Ended, prev.Name)
		}
	}
	if d.Level == Incremental {
		d.Reason = "changes since backup " + last.Name()
		return d, nil
	}
	// Not one disk can build on the last backup.
	var whys []string
	for _, c := range d.Disks {
		whys = append(whys, c.Name+": "+c.Reason)
	}
	if want == WantInc {
		return d, fmt.Errorf("no disk of domain %q can be backed up incrementally (%s); use --level full (or auto)", domain, strings.Join(whys, "; "))
	}
	d.Level, d.From = Full, nil
	d.Reason = "no disk can build on the last backup (" + strings.Join(whys, "; ") + ")"
	return d, nil
}

const copiedWhole = ": it cannot carry a checkpoint bitmap, so it is copied whole every time"

func hasDisk(disks []DiskInfo, name string) bool {
	for _, d := range disks {
		if d.Name == name {
			return true
		}
	}
	return false
}
