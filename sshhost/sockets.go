package sshhost

import (
	"context"
	"fmt"
	"strings"
)

// socketDirScript makes a pull job's private socket folder on the host, in
// the place vbackup uses when it runs there (job.DefaultSockets): /run for
// root, else $XDG_RUNTIME_DIR, else /tmp/vbackup-UID. A stale socket goes
// (no job runs: checked before). As root the folder is handed to the
// owner of the first disk image, the user QEMU runs as. Another user cannot
// hand it over: when that image is not its own (a system daemon's QEMU), the
// folder lets QEMU create the socket (others may enter, list nothing,
// remove nothing of ours) and gives it our group (setgid), which QEMU's
// group-writable socket lets connect, and no one else. It prints the
// folder.
const socketDirScript = `set -e
dom=$1 socket=$2 image=$3
` + baseScript + makeBaseScript + `dir=$base/$dom
[ -d "$dir" ] && [ ! -L "$dir" ] || mkdir -m 700 "$dir"
rm -f "$dir/$socket"
if [ -n "$image" ] && [ -e "$image" ]; then
	if [ "$uid" = 0 ]; then
		chown "$(stat -c %u:%g "$image")" "$dir"
	elif [ "$(stat -c %u "$image")" != "$uid" ]; then
		chmod 3773 "$dir"
	fi
fi
printf '%s\n' "$dir"
`

// removeScript removes the folder once it is empty (libvirt removes the
// socket when the job ends); dead also removes a socket a dead QEMU left.
const removeScript = `dom=$1 socket=$2 mode=$3
` + baseScript + `dir=$base/$dom
case "$mode" in dead) rm -f "$dir/$socket" ;; esac
rmdir "$dir" 2>/dev/null
exit 0
`

// baseScript sets base, the folder of the socket folders, and uid.
const baseScript = `uid=$(id -u)
if [ "$uid" = 0 ]; then base=/run/vbackup
elif [ -n "$XDG_RUNTIME_DIR" ]; then base=$XDG_RUNTIME_DIR/vbackup
else base=/tmp/vbackup-$uid; fi
`

// makeBaseScript makes the folder base, its owner's alone to write.
const makeBaseScript = `mkdir -p "$base"
if [ "$uid" != 0 ] && [ "$(stat -c %u "$base")" != "$uid" ]; then
	echo "$base belongs to another user" >&2; exit 3
fi
chmod go-w "$base"
`

// SocketDir makes the private folder for domain's NBD socket on the host
// and returns its path there; image is the domain's first disk image file
// ("" if none).
func (h *Host) SocketDir(ctx context.Context, domain, socket, image string) (string, error) {
	out, err := h.Run(ctx, socketDirScript, domain, socket, image)
	if err != nil {
		return "", fmt.Errorf("making the NBD socket folder on %s: %w", h.Name, err)
	}
	dir := strings.TrimSpace(out)
	if !strings.HasPrefix(dir, "/") {
		return "", fmt.Errorf("making the NBD socket folder on %s: the host answered %q, not a folder", h.Name, out)
	}
	return dir, nil
}

// RemoveSocketDir removes the folder SocketDir made, once it is empty; with
// dead, the socket of a QEMU that died goes first.
func (h *Host) RemoveSocketDir(ctx context.Context, domain, socket string, dead bool) error {
	mode := ""
	if dead {
		mode = "dead"
	}
	_, err := h.Run(ctx, removeScript, domain, socket, mode)
	return err
}
