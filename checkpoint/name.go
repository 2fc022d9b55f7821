package checkpoint

import "fmt"

// MaxNameLen is the longest checkpoint name, in bytes, that the QEMU
// driver can keep. It stores each checkpoint's metadata in
// <checkpointDir>/<domain>/<name>.xml, so name plus ".xml" must fit a
// 255-byte file name (NAME_MAX on ext4, xfs, btrfs). A longer name is
// only refused by that write, after the qcow2 bitmaps were already
// added, leaving bitmaps libvirt no longer knows about; checking up front
// avoids that. (QEMU's own limit for a bitmap name, 1023 bytes, is looser.)
const MaxNameLen = 255 - len(".xml")

// InvalidNameError says which rule a checkpoint name breaks.
type InvalidNameError struct {
	Name   string
	Reason string
}

func (e *InvalidNameError) Error() string {
	return fmt.Sprintf("invalid checkpoint name %q: %s", e.Name, e.Reason)
}

// ValidateName accepts exactly the names libvirt and its QEMU driver can
// create a checkpoint under.
//
// libvirt validates checkpoint XML against domaincheckpoint.rng, whose
// checkpointName is the pattern [a-zA-Z0-9_\-][a-zA-Z0-9_\-.]*: ASCII
// only, no leading '.', no '/', no whitespace. virsh reports a violation
// only as a generic schema failure ("Extra element name in interleave"),
// which is why we name the rule instead. On top of that comes the QEMU
// driver's length limit, see MaxNameLen. A leading '-' is valid, as is
// an all-digit name (libvirt's default name is the creation time in
// seconds).
func ValidateName(name string) error {
	bad := func(reason string) error { return &InvalidNameError{Name: name, Reason: reason} }
	if name == "" {
		return bad("a name cannot be empty")
	}
	for _, r := range name {
		switch {
		case r == '/':
			return bad("a name cannot contain '/'")
		case r == '\n':
			return bad("a name cannot contain a newline")
		case !nameRune(r):
			return bad(fmt.Sprintf("a name may only contain ASCII letters, digits, '_', '-' and '.', not %q", r))
		}
	}
	if name[0] == '.' {
		return bad("a name cannot start with '.'")
	}
	if len(name) > MaxNameLen {
		return bad(fmt.Sprintf("a name cannot be longer than %d bytes (this one has %d)", MaxNameLen, len(name)))
	}
	return nil
}

func nameRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '_' || r == '-' || r == '.'
}
