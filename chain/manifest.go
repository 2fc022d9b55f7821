// Package chain keeps backups on disk as chains of plain qcow2 images: a full
// image per disk, then overlays whose backing file is the previous backup of
// the same disk, so that qemu-img and libvirt read any point directly.
//
// A folder holds the backups of one domain, one sub-folder each, named after
// the backup's checkpoint:
//
//	DIR/
//	  .vbackup.lock                       held while a vbackup command writes DIR
//	  vbackup-20261124T120000Z/           a full backup
//	    manifest.json                     what this backup holds (Manifest)
//	    checkpoint.xml, domain.xml        the checkpoint and domain definitions
//	    vda.qcow2                         the disk at that checkpoint
//	  vbackup-20261124T130000Z/           an incremental backup
//	    manifest.json …
//	    vda.qcow2                         backing file ../vbackup-20261124T120000Z/vda.qcow2
//
// A backup is written into a hidden folder (.NAME.partial) and appears under
// its name, with its manifest, by one rename once every file is on stable
// storage: a folder that a manifest describes is complete, and nothing else
// is ever referenced.
package chain

import (
	"encoding/json"
	"fmt"
	"time"
)

// FormatVersion marks manifests this package writes and reads.
const FormatVersion = "vbackup-manifest/1"

// Levels of a backup and of each disk in it.
const (
	Full        = "full"
	Incremental = "incremental"
)

// Manifest describes one backup.
type Manifest struct {
	Format string `json:"format"`
	Seq    int    `json:"seq"` // 1, 2, …: the order of the backups in their folder, whatever the clock did
	// Folder is the identity of the backup folder, which its checkpoints
	// carry too: a folder builds only on its own ("" before folders had one).
	Folder     string     `json:"folder,omitempty"`
	Domain     Domain     `json:"domain"`
	Checkpoint Checkpoint `json:"checkpoint"`
	Time       time.Time  `json:"time"`  // when the backup job started
	Level      string     `json:"level"` // incremental when any disk is
	Mode       string     `json:"mode"`  // pull or push
	Disks      []Disk     `json:"disks"`
	// Firmware is what the domain needs besides its disks; manifests
	// written before it was kept have none.
	Firmware *Firmware `json:"firmware,omitempty"`
}

// Domain is the domain backed up, as it was defined then.
type Domain struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	XML  string `json:"xml"` // the inactive definition, without secrets
}

// Checkpoint is the checkpoint created with the backup: the point the
// backup holds, and where the next incremental starts.
type Checkpoint struct {
	Name   string `json:"name"`
	Parent string `json:"parent,omitempty"` // the checkpoint of the backup before, for an incremental
	XML    string `json:"xml"`              // as checkpoint-dumpxml gives it, to redefine it elsewhere
}

// Disk is one disk of a backup.
type Disk struct {
	Name        string `json:"name"`              // the disk's target, e.g. vda
	File        string `json:"file"`              // relative to the backup's folder
	Format      string `json:"format"`            // of File: qcow2
	Level       string `json:"level"`             // full or incremental
	Reason      string `json:"reason,omitempty"`  // why this level, when it is not the obvious one
	Backing     string `json:"backing,omitempty"` // incremental: the backup whose file of this disk it builds on
	Bitmap      bool   `json:"bitmap"`            // the checkpoint tracks the disk's changes: the next backup can be incremental
	VirtualSize uint64 `json:"virtual_size"`
	Copied      uint64 `json:"copied"`   // bytes read from the domain for this backup
	Checksum    string `json:"checksum"` // of the disk's whole content at the checkpoint (package contentsum)
	// Digests names the file of the checksum's chunk digests (32 bytes per
	// MiB, relative to the backup's folder), which the next incremental
	// reuses for what did not change.
	Digests string `json:"digests,omitempty"`
	// DigestsChanged says that Digests holds only the chunks this image
	// changed, as 40-byte records (the chunk's index, big-endian, and its
	// digest) in order: an incremental's file grows with what changed, not
	// with the disk. The disk's digests at this point are the chain's full
	// file with each incremental's records laid over it.
	DigestsChanged bool `json:"digests_changed,omitempty"`
}

// Disk returns the disk named name.
func (m *Manifest) Disk(name string) (Disk, bool) {
	for _, d := range m.Disks {
		if d.Name == name {
			return d, true
		}
	}
	return Disk{}, false
}

// check refuses a manifest this package could not act on safely.
func (m *Manifest) check() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format %q, not %q (written by another version of vbackup?)", m.Format, FormatVersion)
	}
	if m.Checkpoint.Name == "" || m.Domain.UUID == "" {
		return fmt.Errorf("no checkpoint name or domain UUID")
	}
	if len(m.Disks) == 0 {
		return fmt.Errorf("no disks")
	}
	for _, d := range m.Disks {
		switch {
		case d.Name == "" || d.File == "" || d.Checksum == "":
			return fmt.Errorf("disk %q: name, file and checksum are required", d.Name)
		case d.Level == Incremental && d.Backing == "":
			return fmt.Errorf("disk %s: incremental without a backing backup", d.Name)
		case d.Level != Full && d.Level != Incremental:
			return fmt.Errorf("disk %s: level %q, want full or incremental", d.Name, d.Level)
		}
	}
	return nil
}

func (m *Manifest) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
