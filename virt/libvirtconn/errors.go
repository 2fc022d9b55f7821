package libvirtconn

import (
	"errors"

	"libvirt.org/go/libvirt"

	"vbackup/virt"
)

// kinds maps libvirt's error codes to the project's errors. Codes not listed
// keep libvirt's message with no kind.
var kinds = map[libvirt.ErrorNumber]error{
	libvirt.ERR_NO_DOMAIN:               virt.ErrNoDomain,
	libvirt.ERR_NO_DOMAIN_CHECKPOINT:    virt.ErrNoCheckpoint,
	libvirt.ERR_NO_SUPPORT:              virt.ErrUnsupported,
	libvirt.ERR_OPERATION_UNSUPPORTED:   virt.ErrUnsupported,
	libvirt.ERR_ARGUMENT_UNSUPPORTED:    virt.ErrUnsupported,
	libvirt.ERR_INVALID_ARG:             virt.ErrInvalidArg,
	libvirt.ERR_CONFIG_UNSUPPORTED:      virt.ErrInvalidArg,
	libvirt.ERR_OPERATION_INVALID:       virt.ErrOperationInvalid,
	libvirt.ERR_CHECKPOINT_INCONSISTENT: virt.ErrCheckpointInconsistent,
	libvirt.ERR_XML_ERROR:               virt.ErrXML,
	libvirt.ERR_XML_DETAIL:              virt.ErrXML,
	libvirt.ERR_NO_CONNECT:              virt.ErrConnect,
	libvirt.ERR_AUTH_FAILED:             virt.ErrConnect,
	libvirt.ERR_AUTH_CANCELLED:          virt.ErrConnect,
	libvirt.ERR_AUTH_UNAVAILABLE:        virt.ErrConnect,
	libvirt.ERR_NO_STORAGE_POOL:         virt.ErrNoPool,
	libvirt.ERR_STORAGE_VOL_EXIST:       virt.ErrVolumeExists,
}

func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		return &virt.Error{Op: op, Msg: err.Error()}
	}
	return &virt.Error{Op: op, Kind: kinds[lerr.Code], Msg: lerr.Message}
}

// message is libvirt's sentence, without the binding's virError(...) frame.
func message(err error) string {
	var lerr libvirt.Error
	if errors.As(err, &lerr) {
		return lerr.Message
	}
	return err.Error()
}

// withKind gives err a kind when libvirt's code did not map to one.
func withKind(err error, kind error) error {
	var verr *virt.Error
	if errors.As(err, &verr) && verr.Kind == nil {
		return &virt.Error{Op: verr.Op, Kind: kind, Msg: verr.Msg}
	}
	return err
}
