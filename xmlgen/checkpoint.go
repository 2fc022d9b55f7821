// Package xmlgen builds the XML documents vbackup hands to libvirt
// (<domaincheckpoint>, later <domainbackup>) from the user's options, and
// holds the policy that fits those options to a domain's disks. It is pure:
// it neither talks to libvirt nor reads files.
package xmlgen

import (
	"fmt"
	"regexp"

	"libvirt.org/go/libvirtxml"
)

// CheckpointSpec is what a user asks of a new checkpoint.
type CheckpointSpec struct {
	Name        string // "" lets libvirt name it after the creation time
	Description string
	Disks       []DiskSpec // none: libvirt's default, a bitmap on every writable disk
}

// Checkpoint builds the document for spec as it stands; CheckpointXML checks
// spec first.
func Checkpoint(spec CheckpointSpec) *libvirtxml.DomainCheckpoint {
	cp := &libvirtxml.DomainCheckpoint{
		Name:        spec.Name,
		Description: spec.Description,
	}
	if len(spec.Disks) > 0 {
		cp.Disks = &libvirtxml.DomainCheckpointDisks{}
		for _, d := range spec.Disks {
			cp.Disks.Disks = append(cp.Disks.Disks, libvirtxml.DomainCheckpointDisk{
				Name:       d.Name,
				Checkpoint: d.Checkpoint,
				Bitmap:     d.Bitmap,
			})
		}
	}
	return cp
}

// CheckpointXML returns the <domaincheckpoint> document for spec, indented
// as libvirt indents its own, ending in a newline. It refuses what libvirt's
// schema would, so the user learns which option was wrong.
func CheckpointXML(spec CheckpointSpec) (string, error) {
	if err := checkCheckpointSpec(spec); err != nil {
		return "", err
	}
	doc, err := Checkpoint(spec).Marshal()
	if err != nil {
		return "", fmt.Errorf("checkpoint %q: %w", spec.Name, err)
	}
	return doc + "\n", nil
}

// checkpointName is the schema's checkpointName pattern (domaincheckpoint.rng).
var checkpointName = regexp.MustCompile(`^[a-zA-Z0-9_\-][a-zA-Z0-9_\-.]*$`)

func checkCheckpointSpec(spec CheckpointSpec) error {
	if spec.Name != "" && !checkpointName.MatchString(spec.Name) {
		return fmt.Errorf("checkpoint name %q: use only letters, digits, '_', '-' and '.', and do not start with '.'", spec.Name)
	}
	for _, d := range spec.Disks {
		if err := d.check(); err != nil {
			return fmt.Errorf("disk %q: %w", d.Name, err)
		}
	}
	return nil
}
