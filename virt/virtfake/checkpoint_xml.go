package virtfake

import (
	"context"
	"fmt"
	"strings"

	"vbackup/virt"
)

// CheckpointXML formats a checkpoint as libvirt does; with Size, each
// consistent bitmap carries size='0' (the fake tracks no writes).
func (d *Domain) CheckpointXML(ctx context.Context, name string, flags virt.XMLFlags) (string, error) {
	d.c.mu.Lock()
	defer d.c.mu.Unlock()
	if err := d.c.enter("CheckpointXML", "virDomainCheckpointLookupByName"); err != nil {
		return "", err
	}
	cp, err := d.lookup(name)
	if err != nil {
		return "", err
	}
	var sized map[string]bool
	if flags.Size {
		if !d.active {
			return "", notRunning("virDomainCheckpointGetXMLDesc")
		}
		sized = map[string]bool{}
		for _, x := range cp.disks {
			if x.checkpoint == "bitmap" && diskByTarget(d.live, x.name) != nil && d.bitmaps[x.name][cp.name] {
				sized[x.name] = true
			}
		}
	}
	var b strings.Builder
	b.WriteString("<domaincheckpoint>\n")
	fmt.Fprintf(&b, "  <name>%s</name>\n", escText(cp.name))
	if cp.description != "" {
		fmt.Fprintf(&b, "  <description>%s</description>\n", escText(cp.description))
	}
	if cp.parent != "" {
		fmt.Fprintf(&b, "  <parent>\n    <name>%s</name>\n  </parent>\n", escText(cp.parent))
	}
	if cp.created != 0 {
		fmt.Fprintf(&b, "  <creationTime>%d</creationTime>\n", cp.created)
	}
	if len(cp.disks) > 0 {
		b.WriteString("  <disks>\n")
		for _, x := range cp.disks {
			fmt.Fprintf(&b, "    <disk name='%s' checkpoint='%s'", escAttr(x.name), x.checkpoint)
			if x.bitmap != "" {
				fmt.Fprintf(&b, " bitmap='%s'", escAttr(x.bitmap))
				if sized[x.name] {
					b.WriteString(" size='0'")
				}
			}
			b.WriteString("/>\n")
		}
		b.WriteString("  </disks>\n")
	}
	if cp.dom != nil && !flags.NoDomain {
		doc, err := cp.dom.Marshal()
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(doc, "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	b.WriteString("</domaincheckpoint>\n")
	return b.String(), nil
}
