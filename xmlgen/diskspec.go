package xmlgen

import (
	"fmt"
	"strings"
)

const (
	checkpointBitmap = "bitmap"
	checkpointNo     = "no"
)

// DiskSpec is one disk's part in a checkpoint, as --diskspec gives it.
type DiskSpec struct {
	Name       string // disk target ("vda"), or its source path as libvirt also accepts
	Checkpoint string // "bitmap", "no", or "" for libvirt's default, which is bitmap
	Bitmap     string // "" lets libvirt name the bitmap after the checkpoint
}

// WantsBitmap reports whether the disk is to carry a bitmap: an absent
// checkpoint= means bitmap to libvirt.
func (d DiskSpec) WantsBitmap() bool { return d.Checkpoint != checkpointNo }

// String renders d back in --diskspec syntax, so that ParseDiskSpec(d.String())
// gives d again.
func (d DiskSpec) String() string {
	escape := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	var b strings.Builder
	b.WriteString(escape(d.Name))
	if d.Checkpoint != "" {
		b.WriteString(",checkpoint=" + escape(d.Checkpoint))
	}
	if d.Bitmap != "" {
		b.WriteString(",bitmap=" + escape(d.Bitmap))
	}
	return b.String()
}

const diskSpecSyntax = "DISK[,checkpoint=bitmap|no][,bitmap=NAME]"

// ParseDiskSpec parses the argument of --diskspec, with the syntax of
// virsh checkpoint-create-as: DISK[,checkpoint=bitmap|no][,bitmap=NAME],
// where ",," stands for a literal comma. virsh passes any checkpoint= value
// and an empty disk name on for libvirt to refuse; vbackup refuses them here,
// where it can say which --diskspec was wrong.
func ParseDiskSpec(s string) (DiskSpec, error) {
	fail := func(format string, args ...any) (DiskSpec, error) {
		return DiskSpec{}, fmt.Errorf("--diskspec %q: %s", s, fmt.Sprintf(format, args...))
	}
	fields := splitEscaped(s)
	d := DiskSpec{Name: fields[0]}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		key, value, _ := strings.Cut(f, "=")
		if key != "checkpoint" && key != "bitmap" {
			return fail("unknown key %q; the keys are checkpoint and bitmap (%s)", key, diskSpecSyntax)
		}
		if seen[key] {
			return fail("%s is given twice", key)
		}
		seen[key] = true
		// An empty value would read as "not given" and so mean bitmap.
		switch {
		case key == "checkpoint" && value == "":
			return fail("checkpoint needs a value: checkpoint=bitmap or checkpoint=no")
		case key == "checkpoint":
			d.Checkpoint = value
		case value == "":
			return fail("bitmap needs a name: bitmap=NAME")
		default:
			d.Bitmap = value
		}
	}
	if err := d.check(); err != nil {
		return fail("%v", err)
	}
	return d, nil
}

// check refuses what libvirt's schema would refuse or silently misread.
func (d DiskSpec) check() error {
	switch {
	case d.Name == "":
		return fmt.Errorf("the disk name is empty; write %s", diskSpecSyntax)
	case d.Checkpoint != "" && d.Checkpoint != checkpointBitmap && d.Checkpoint != checkpointNo:
		return fmt.Errorf(`checkpoint must be "bitmap" or "no"`)
	case d.Checkpoint == checkpointNo && d.Bitmap != "":
		return fmt.Errorf("bitmap= names the disk's bitmap, but checkpoint=no gives it none; drop one of them")
	}
	return nil
}

// splitEscaped splits s at single commas, reading ",," as a literal comma,
// as virsh's vshStringToArray does (so "a,,,b" is "a," then "b").
func splitEscaped(s string) []string {
	var fields []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		fields = append(fields, cur.String())
		cur.Reset()
	}
	return append(fields, cur.String())
}
