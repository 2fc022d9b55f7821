package sshhost

import (
	"context"
	"fmt"
	"strings"
)

// serveScript serves one image read-only with qemu-nbd on the host, on a
// unix socket in a private folder beside the pull jobs' ones (baseScript),
// for as long as its stdin stays open: a watcher stops qemu-nbd when
// stdin closes (Close, a broken connection, vbackup killed), and the
// folder goes with it. It prints "serving SOCKET" once the socket listens;
// qemu-nbd opens the image only after, so a failure to open it (a lock)
// ends the script with qemu-nbd's message. --aio=threads: the data goes
// through SSH, far slower than any choice there.
const serveScript = `set -e
dom=$1 image=$2 format=$3 bitmap=$4
if ! command -v qemu-nbd >/dev/null 2>&1; then
	echo "qemu-nbd is not installed on $(uname -n) (not in PATH $PATH): install QEMU's utilities there (Debian: qemu-utils)" >&2
	exit 4
fi
case $image in
/*) ;;
*) echo "$image is not an absolute path" >&2; exit 4 ;;
esac
[ -n "$format" ] || { echo "no image format given for $image" >&2; exit 4; }
[ -e "$image" ] || { echo "$image: no such file on $(uname -n)" >&2; exit 4; }
` + baseScript + makeBaseScript + `dir=$(mktemp -d "$base/$dom.nbd.XXXXXX")
sock=$dir/nbd.sock
pid= watcher=
trap 'set +e; if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null; fi; [ -z "$watcher" ] || kill $watcher 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 1' HUP INT TERM
# A write to a session SSH dropped fails instead of killing the shell past
# its EXIT trap (which removes the folder).
trap '' PIPE
set -- --read-only --persistent --shared=8 --format="$format" --socket="$sock" --cache=writeback --aio=threads
[ -z "$bitmap" ] || set -- "$@" --bitmap="$bitmap"
qemu-nbd "$@" -- "$image" &
pid=$!
# An asynchronous list's stdin is /dev/null: the watcher reads stdin as fd 3.
exec 3<&0
{ cat <&3 >/dev/null 2>&1; kill $pid 2>/dev/null; } >/dev/null 2>&1 &
watcher=$!
exec 3<&-
while [ ! -S "$sock" ]; do
	if ! kill -0 $pid 2>/dev/null; then
		rc=0; wait $pid || rc=$?; pid=
		echo "qemu-nbd exited (status $rc) before it listened" >&2
		exit 5
	fi
	sleep 0.05
done
printf 'serving %s\n' "$sock"
rc=0; wait $pid || rc=$?; pid=
exit $rc
`

// Served is qemu-nbd serving an image on the host, on the unix socket
// Socket there, until Close.
type Served struct {
	Socket string
	*Session
}

// ServeImage serves the host's image (an absolute path, opened as format,
// never probed) read-only with qemu-nbd; with bitmap, the export carries
// that persistent bitmap (qemu:dirty-bitmap:NAME). It returns once the
// socket listens: qemu-nbd may still fail to open the image, which ends
// the session (Done) with its message. domain names the socket's folder.
func (h *Host) ServeImage(ctx context.Context, domain, image, format, bitmap string) (*Served, error) {
	s, err := h.Start(ctx, serveScript, domain, image, format, bitmap)
	if err != nil {
		return nil, fmt.Errorf("serving %s with qemu-nbd: %w", image, err)
	}
	sock, ok := strings.CutPrefix(s.Ready, "serving ")
	if !ok || !strings.HasPrefix(sock, "/") {
		s.Close()
		return nil, fmt.Errorf("serving %s with qemu-nbd on %s: the host answered %q, not a socket", image, h.Name, s.Ready)
	}
	return &Served{Socket: sock, Session: s}, nil
}
