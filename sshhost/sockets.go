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
// hand it over: when that image is not its own (a system daemon's QEMU),
// the folder is made under /tmp/vbackup-UID, which others may enter but not
// list (XDG_RUNTIME_DIR is its owner's alone, and QEMU could not reach a
// folder in it), and the folder lets QEMU create the socket (others may
// enter, list nothing, remove nothing of ours) and gives it our group
// (setgid), which QEMU's group-writable socket lets connect: we, and the
// members of our primary group, which is ours alone on a host with a
// group for each user. Every run sets the folder's mode again. It prints
// the folder.
const socketDirScript = `set -e
dom=$1 socket=$2 image=$3
shared=
if [ "$(id -u)" != 0 ] && [ -n "$image" ] && [ -e "$image" ] && [ "$(stat -c %u "$image")" != "$(id -u)" ]; then shared=1; fi
` + baseScript + makeBaseScript + `dir=$base/$dom
[ -d "$dir" ] && [ ! -L "$dir" ] || mkdir -m 700 "$dir"
rm -f "$dir/$socket"
if [ -n "$shared" ]; then
	chmod 3773 "$dir"
else
	chmod 700 "$dir"
	if [ "$uid" = 0 ] && [ -n "$image" ] && [ -e "$image" ]; then
		chown "$(stat -c %u:%g "$image")" "$dir"
	fi
fi
printf '%s\n' "$dir"
`

// removeScript removes the folder once it is empty (libvirt removes the
// socket when the job ends), wherever socketDirScript made it; dead also
// removes a socket a dead QEMU left.
const removeScript = `dom=$1 socket=$2 mode=$3
for shared in "" 1; do
` + baseScript + `dir=$base/$dom
[ -d "$dir" ] || continue
case "$mode" in dead) rm -f "$dir/$socket" ;; esac
rmdir "$dir" 2>/dev/null
done
exit 0
`

// baseScript sets base, the folder of the socket folders, and uid; shared
// is set when QEMU runs as another user.
const baseScript = `uid=$(id -u)
if [ "$uid" = 0 ]; then base=/run/vbackup
elif [ -n "$shared" ]; then base=/tmp/vbackup-$uid
elif [ -n "$XDG_RUNTIME_DIR" ]; then base=$XDG_RUNTIME_DIR/vbackup
else base=/tmp/vbackup-$uid; fi
`

// makeBaseScript makes the folder base, its owner's alone to write; when
// QEMU runs as another user, others may enter it (only to reach a folder
// whose name they know).
const makeBaseScript = `mkdir -p "$base"
if [ "$uid" != 0 ] && [ "$(stat -c %u "$base")" != "$uid" ]; then
	echo "$base belongs to another user" >&2; exit 3
fi
if [ -n "$shared" ]; then chmod 711 "$base"; else chmod go-w "$base"; fi
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
