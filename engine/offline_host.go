package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"vbackup/nbd"
	"vbackup/qemunbd"
	"vbackup/sshhost"
)

// imageHost is where a shut-off domain's images are: on this host, or on
// libvirtd's host when the connection goes through SSH. Either way the
// same steps run on them (offline.go); only where qemu-img and qemu-nbd
// run differs.
type imageHost interface {
	// check fails, before anything changes, when the tools are missing.
	check(ctx context.Context) error
	// qemuImg runs qemu-img on the image, its last argument.
	qemuImg(ctx context.Context, args ...string) ([]byte, error)
	// serve serves the image read-only over NBD, with bitmap when it is
	// not "", at a URI this host reaches.
	serve(ctx context.Context, image, format, bitmap string) (imageServer, error)
	// where is " on HOST" for the messages, "" here.
	where() string
}

// imageServer is a read-only NBD export of one image.
type imageServer interface {
	URI() string
	Close() error
}

// images is where the domain's images are.
func (b *Backup) images() imageHost {
	if b.req.Sockets.Remote() {
		return remoteImages{host: b.req.Sockets.Host, domain: b.dom.Name()}
	}
	return localImages{}
}

// localImages are files of this host.
type localImages struct{}

func (localImages) check(context.Context) error { return nil }

func (localImages) qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	return qemuImg(ctx, "", args...)
}

func (localImages) serve(ctx context.Context, image, format, bitmap string) (imageServer, error) {
	return qemunbd.ServeBitmap(ctx, image, format, bitmap)
}

func (localImages) where() string { return "" }

// remoteImages are files of libvirtd's host, reached through the same SSH
// access as libvirt: qemu-img runs there, and qemu-nbd serves there on a
// unix socket that an SSH forward brings here (nothing listens on the
// host's network).
type remoteImages struct {
	host   *sshhost.Host
	domain string
}

// toolsScript prints which of qemu-img and qemu-nbd the host lacks.
const toolsScript = `for c in qemu-img qemu-nbd; do
	command -v $c >/dev/null 2>&1 || echo $c
done
`

func (r remoteImages) check(ctx context.Context) error {
	out, err := r.host.Run(ctx, toolsScript)
	if err != nil {
		return fmt.Errorf("looking for qemu-img and qemu-nbd on %s: %w", r.host.Name, err)
	}
	switch missing := strings.Fields(out); len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%s is not installed on %s, which holds the images: install QEMU's utilities there (Debian: qemu-utils)", missing[0], r.host.Name)
	default:
		return fmt.Errorf("%s are not installed on %s, which holds the images: install QEMU's utilities there (Debian: qemu-utils)", strings.Join(missing, " and "), r.host.Name)
	}
}

// qemuImgScript runs qemu-img with its messages on one line: Run keeps a
// failed script's last line, and qemu-img says what to do on the line
// after its error (a lock: "Is another process using the image?").
const qemuImgScript = `exec 3>&1
err=$(qemu-img "$@" 2>&1 >&3 3>&-) && rc=0 || rc=$?
[ -z "$err" ] || printf '%s\n' "$err" | tr '\n' ' ' >&2
exit $rc
`

func (r remoteImages) qemuImg(ctx context.Context, args ...string) ([]byte, error) {
	out, err := r.host.Run(ctx, qemuImgScript, args...)
	if err != nil {
		image := args[len(args)-1]
		for _, a := range args {
			if strings.HasPrefix(a, "/") {
				image = a
				break
			}
		}
		if strings.Contains(err.Error(), "Permission denied") {
			// A system daemon's images are root's or QEMU's user's; the
			// SSH user of a pull backup needs only libvirt's socket.
			return nil, fmt.Errorf("qemu-img %s %s: %w; a shut-off domain's images are read and given the new checkpoint's bitmap by the SSH user (%s), who may not: connect as a user who may (for a system daemon, root: qemu+ssh://root@%s/system), or back the domain up while it runs", args[0], image, err, r.host.Where(), r.host.Name)
		}
		return nil, fmt.Errorf("qemu-img %s %s: %w", args[0], image, err)
	}
	return []byte(out), nil
}

func (r remoteImages) where() string { return " on " + r.host.Name }

// remoteStartWait bounds qemu-nbd's opening the image on the host.
const remoteStartWait = 30 * time.Second

func (r remoteImages) serve(ctx context.Context, image, format, bitmap string) (imageServer, error) {
	served, err := r.host.ServeImage(ctx, r.domain, image, format, bitmap)
	if err != nil {
		return nil, err
	}
	fw, err := r.host.Forward(ctx, served.Socket)
	if err != nil {
		served.Close()
		return nil, err
	}
	s := &remoteServer{served: served, fw: fw}
	if err := s.await(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("serving %s with qemu-nbd%s: %w", image, r.where(), err)
	}
	return s, nil
}

// remoteServer is qemu-nbd on libvirtd's host, through its forward.
type remoteServer struct {
	served *sshhost.Served
	fw     *sshhost.Forward
}

func (s *remoteServer) URI() string {
	return nbd.Target{Network: "unix", Address: s.fw.Local}.String()
}

// Close stops qemu-nbd there (its script removes the socket's folder),
// then the forward.
func (s *remoteServer) Close() error {
	s.served.Close()
	return s.fw.Close()
}

// await waits until the export answers a handshake: qemu-nbd listens
// before it opens the image, and one that cannot (the image locked)
// exits, which ends its session with its message.
func (s *remoteServer) await(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, remoteStartWait)
	defer cancel()
	err := nbd.AwaitServing(ctx, s.URI(), 50*time.Millisecond, s.served.Done())
	switch {
	case errors.Is(err, nbd.ErrServerGone):
		return s.served.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("qemu-nbd is not serving after %v (%v): %s", remoteStartWait, err, strings.TrimSpace(s.served.Said()))
	case err != nil && ctx.Err() != nil:
		return ctx.Err() // cancelled: the caller says why
	}
	return err
}
