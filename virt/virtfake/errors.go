package virtfake

import (
	"fmt"

	"vbackup/virt"
)

// libvirt prefixes each message with its error code's own phrase, and
// libvirtconn maps the code to a kind; these pairs are what the real daemon
// was seen to return (libvirt 9.0, QEMU 7.2).
type errClass struct {
	prefix string
	kind   error
}

var (
	errOperationInvalid = errClass{"Requested operation is not valid: ", virt.ErrOperationInvalid}
	errOperationUnsup   = errClass{"Operation not supported: ", virt.ErrUnsupported}
	errConfigUnsup      = errClass{"unsupported configuration: ", virt.ErrInvalidArg}
	errInvalidArg       = errClass{"invalid argument: ", virt.ErrInvalidArg}
	errFlags            = errClass{"", virt.ErrInvalidArg}
	errOperationFailed  = errClass{"operation failed: ", nil}
	errInternal         = errClass{"internal error: ", nil}
	errNoDomain         = errClass{"Domain not found: ", virt.ErrNoDomain}
	errNoCheckpoint     = errClass{"Domain checkpoint not found: ", virt.ErrNoCheckpoint}
	errNoBackup         = errClass{"Domain backup job id not found: ", nil}
	errInconsistent     = errClass{"checkpoint inconsistent: ", virt.ErrCheckpointInconsistent}
	errXML              = errClass{"XML error: ", virt.ErrXML}
	errXMLDetail        = errClass{"", virt.ErrXML}
	errSchema           = errClass{"XML document failed to validate against schema: ", nil}
	errTimeout          = errClass{"Timed out during operation: ", nil}
)

func newErr(op string, class errClass, format string, args ...any) error {
	return &virt.Error{Op: op, Kind: class.kind, Msg: class.prefix + fmt.Sprintf(format, args...)}
}

// notRunning is virDomainObjCheckActive's refusal.
func notRunning(op string) error {
	return newErr(op, errOperationInvalid, "domain is not running")
}

// parseErr is how libvirt reports XML that libxml2 cannot read: the
// document's label, then the parser's complaint.
func parseErr(op, label, doc string, err error) error {
	if isBlank(doc) {
		return newErr(op, errXMLDetail, "(%s):1: Document is empty\n(null)\n^", label)
	}
	return newErr(op, errXMLDetail, "(%s):1: %v", label, err)
}

func schemaErr(op, schema, detail string) error {
	return newErr(op, errSchema, "Unable to validate doc against /usr/share/libvirt/schemas/%s\n%s\n", schema, detail)
}

func isBlank(s string) bool {
	for _, r := range s {
		if r != ' ' && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}
