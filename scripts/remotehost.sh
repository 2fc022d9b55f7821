#!/usr/bin/env bash
# remotehost.sh: a second host for vbackup's remote-backup tests: a network
# namespace of its own (a veth pair, addresses of its own) and a private
# mount namespace, running sshd, a session-mode libvirtd of the user
# vbremote with QEMU, and a system-mode libvirtd (root; its QEMU runs as the
# user vbqemu). It is reachable only over SSH: its home folders (images,
# libvirt's state and sockets), /tmp, and the system daemon's /etc/libvirt,
# /run/libvirt, /var/{lib,cache,log}/libvirt and /run/vbackup are tmpfs
# mounts that exist only in its mount namespace, so the backup side sees
# none of its files or sockets, and the system daemon never meets another.
#
#   remotehost.sh up DIR      start the host (idempotent); prints its libvirt URI
#   remotehost.sh down DIR    stop everything of the host, remove DIR
#
# DIR (the backup side's view) holds what a backup server would have:
#   DIR/uri          qemu+ssh://vbremote@IP/session?command=DIR/ssh&keyfile=...
#   DIR/system_uri   qemu+ssh://root@IP/system?command=DIR/ssh&keyfile=...
#   DIR/system_member_uri  the same as vbremote, a member of its socket's group
#   DIR/ssh          ssh with DIR/ssh_config (the host's known_hosts, BatchMode)
#   DIR/host         the host's address
#   DIR/id_ed25519   the client key           DIR/known_hosts  its host key
#   DIR/ns           the network namespace    DIR/pid          sshd's pid
# Run commands on the host as its user with: ssh -F none -i DIR/id_ed25519
# -o UserKnownHostsFile=DIR/known_hosts vbremote@$(cat DIR/host) CMD, and
# as root (the system daemon's side) with root@ and the same key.
# Needs root.
set -euo pipefail

readonly PROG=${0##*/}
readonly RUSER=vbremote
readonly RHOME=/home/$RUSER
readonly QUSER=libvirt-qemu
# The system daemon's unix_sock_group, of which vbremote is a member. Not
# Debian's "libvirt": on a machine with a system libvirtd of its own, that
# would let vbremote at it.
readonly RGROUP=vblibvirt
# The system daemon's private folders, each a tmpfs in the host's mount
# namespace only.
readonly SYSTEM_DIRS="/etc/libvirt /run/libvirt /run/vbackup /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /root"
readonly MARKER=.vbackup-remotehost
readonly START_WAIT=${VBACKUP_TESTBED_START_WAIT:-30}
readonly IDLE_TIMEOUT=${VBACKUP_TESTBED_IDLE_TIMEOUT:-3600}
readonly SAFE_PATH=/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage:
  $PROG up DIR     start a second host reachable over SSH only; prints its URI
  $PROG down DIR   stop it and remove DIR (succeeds if DIR is gone)
Needs root. Exit status 2 on usage errors.
EOF
}

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it creates a network namespace and user '$RUSER')"; }

need_cmds() {
	local c missing=()
	for c in ip unshare nsenter runuser setsid libvirtd virsh qemu-system-x86_64 qemu-img ssh ssh-keygen ssh-keyscan /usr/sbin/sshd virt-ssh-helper; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (run scripts/install-deps.sh)"
}

ssh_as() {
	local user=$1 dir=$2; shift 2
	ssh -F none -i "$dir/id_ed25519" -o UserKnownHostsFile="$dir/known_hosts" -o BatchMode=yes \
		-o ConnectTimeout=5 "$user@$(cat "$dir/host")" "$@"
}

ssh_host() { ssh_as "$RUSER" "$@"; }

answers() { [ -s "$1/uri" ] && ssh_host "$1" virsh -c qemu:///session version >/dev/null 2>&1; }

answers_system() {
	[ -s "$1/system_uri" ] && [ -s "$1/system_member_uri" ] &&
		ssh_as root "$1" virsh -c qemu:///system version >/dev/null 2>&1
}

ensure_user() {
	if ! id "$RUSER" >/dev/null 2>&1; then
		useradd -m -d "$RHOME" -s /bin/sh "$RUSER"
	fi
	# With UsePAM no, a locked password ('!') refuses keys too.
	usermod -p '*' "$RUSER"
	mkdir -p "$RHOME"
	# The system daemon's QEMU runs as Debian's libvirt-qemu (the QEMU
	# driver refuses to start without it): not the SSH user, not root.
	if ! id "$QUSER" >/dev/null 2>&1; then
		useradd -r -M -d /nonexistent -s /usr/sbin/nologin "$QUSER"
	fi
	# As Debian's package does. Else, where /dev/kvm exists, libvirt finds
	# KVM in QEMU's probe but not usable by QEMU's user, and probes again
	# (some 35 s under TCG) on every domain defined.
	if getent group kvm >/dev/null && ! id -nG "$QUSER" | grep -qw kvm; then
		usermod -aG kvm "$QUSER"
	fi
	getent group "$RGROUP" >/dev/null || groupadd -r "$RGROUP"
	id -nG "$RUSER" | grep -qw "$RGROUP" || usermod -aG "$RGROUP" "$RUSER"
}

# free_net: the first N whose namespace vbr-N does not exist.
free_net() {
	local n
	for n in $(seq 1 250); do
		if ! ip netns list | grep -qw "vbr-$n" && ! ip link show "vbr$n-b" >/dev/null 2>&1; then
			echo "$n"
			return
		fi
	done
	die "no free namespace vbr-1..250"
}

cmd_up() {
	local dir=${1:?}
	need_root
	need_cmds
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if answers "$dir"; then
		ensure_user
		system_up "$dir"
		cat "$dir/uri"
		return
	fi
	[ -z "$(ls -A "$dir")" ] || [ -e "$dir/$MARKER" ] || die "$dir is not empty and not a remote host's folder"
	touch "$dir/$MARKER"
	ensure_user
	mkdir -p /run/sshd
	local n ns ip
	n=$(free_net)
	ns=vbr-$n
	ip=10.77.$n.2
	ip netns add "$ns"
	echo "$ns" >"$dir/ns"
	echo "$ip" >"$dir/host"
	ip link add "vbr$n-b" type veth peer name "vbr$n-h"
	ip link set "vbr$n-h" netns "$ns"
	ip addr add "10.77.$n.1/30" dev "vbr$n-b"
	ip link set "vbr$n-b" up
	ip -n "$ns" addr add "$ip/30" dev "vbr$n-h"
	ip -n "$ns" link set "vbr$n-h" up
	ip -n "$ns" link set lo up

	rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub" "$dir/ssh_host_ed25519_key"*
	ssh-keygen -q -t ed25519 -N '' -C "vbackup-backup-server" -f "$dir/id_ed25519"
	ssh-keygen -q -t ed25519 -N '' -C "vbackup-remotehost" -f "$dir/ssh_host_ed25519_key"
	cat >"$dir/sshd_config" <<EOF
ListenAddress $ip
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers $RUSER root
PermitRootLogin prohibit-password
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
EOF
	printf '%s %s\n' "$ip" "$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >"$dir/known_hosts"
	local pub
	pub=$(cat "$dir/id_ed25519.pub")
	# The host's own world: tmpfs over its user's home and /tmp, seen only
	# in its mount namespace; sshd and libvirtd run in it.
	ip netns exec "$ns" unshare -m --propagation private env -i PATH=$SAFE_PATH sh -c '
		set -e
		mount -t tmpfs -o mode=0755 tmpfs '"$RHOME"'
		# DIR may be under /tmp: keep it seen, through the working folder.
		cd '"$dir"'
		mount -t tmpfs -o mode=1777 tmpfs /tmp
		mkdir -p '"$dir"'
		mount --no-canonicalize --bind . '"$dir"'
		cd /
		install -d -o '"$RUSER"' -g '"$RUSER"' -m 700 '"$RHOME"'/.ssh '"$RHOME"'/images
		chown '"$RUSER:$RUSER"' '"$RHOME"'
		printf "%s\n" "'"$pub"'" >'"$RHOME"'/.ssh/authorized_keys
		chown '"$RUSER:$RUSER"' '"$RHOME"'/.ssh/authorized_keys
		chmod 600 '"$RHOME"'/.ssh/authorized_keys
		# No XDG_RUNTIME_DIR: the session daemon and virt-ssh-helper both
		# find the socket under ~/.cache/libvirt.
		runuser -u '"$RUSER"' -- env -i HOME='"$RHOME"' PATH='"$SAFE_PATH"' USER='"$RUSER"' \
			setsid libvirtd --timeout '"$IDLE_TIMEOUT"' >'"$RHOME"'/libvirtd.log 2>&1 </dev/null &
		exec /usr/sbin/sshd -f '"$dir"'/sshd_config -E '"$dir"'/sshd.log
	'
	# libvirt's ssh transport runs the ssh binary, which reads root's
	# ~/.ssh (known_hosts included): the host's key is kept out of it by a
	# wrapper of its own, named in the URI's command= as an admin would.
	cat >"$dir/ssh_config" <<EOF
UserKnownHostsFile $dir/known_hosts
StrictHostKeyChecking yes
BatchMode yes
ConnectTimeout 5
EOF
	printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$dir/ssh_config" >"$dir/ssh"
	chmod 755 "$dir/ssh"
	local uri i
	uri="qemu+ssh://$RUSER@$ip/session?command=$dir/ssh&keyfile=$dir/id_ed25519"
	echo "$uri" >"$dir/uri"
	for ((i = 0; i < START_WAIT * 5; i++)); do
		if answers "$dir" && virsh -c "$uri" version >/dev/null 2>&1; then
			system_up "$dir"
			echo "$uri"
			return
		fi
		sleep 0.2
	done
	tail -n 5 "$dir/sshd.log" >&2 || true
	ssh_host "$dir" tail -n 5 "$RHOME/libvirtd.log" >&2 || true
	virsh -c "$uri" version >&2 || true
	die "the remote host did not answer over SSH within ${START_WAIT}s"
}

# system_up starts the host's system-mode libvirtd if it does not answer:
# as root in the host's namespaces (entered through sshd's pid), over
# tmpfs mounts of its own state, config and socket folders; root logs in
# with the client key. Idempotent.
system_up() {
	local dir=$1 pid uri member i
	if answers_system "$dir"; then
		return
	fi
	pid=$(cat "$dir/pid")
	# A host started before root could log in: let it, keeping sshd's pid.
	if ! grep -q '^PermitRootLogin' "$dir/sshd_config"; then
		sed -i 's/^AllowUsers .*/AllowUsers '"$RUSER"' root/' "$dir/sshd_config"
		echo 'PermitRootLogin prohibit-password' >>"$dir/sshd_config"
		kill -HUP "$pid"
	fi
	nsenter -t "$pid" -m -n env -i PATH=$SAFE_PATH sh -c '
		set -e
		for d in '"$SYSTEM_DIRS"'; do
			mkdir -p "$d"
			mountpoint -q "$d" || mount -t tmpfs -o mode=0755 tmpfs "$d"
		done
		chmod 700 /root
		install -d -m 700 /root/.ssh
		cp '"$dir"'/id_ed25519.pub /root/.ssh/authorized_keys
		chmod 600 /root/.ssh/authorized_keys
		install -d -m 711 /var/lib/libvirt/images
		cat >/etc/libvirt/libvirtd.conf <<EOF
unix_sock_group = "'"$RGROUP"'"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
		cat >/etc/libvirt/qemu.conf <<EOF
user = "'"$QUSER"'"
group = "'"$QUSER"'"
dynamic_ownership = 1
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
		cd /
		HOME=/root setsid libvirtd --timeout '"$IDLE_TIMEOUT"' --pid-file /run/libvirt/libvirtd.pid \
			>/var/log/libvirt/libvirtd.out 2>&1 </dev/null &
	'
	uri="qemu+ssh://root@$(cat "$dir/host")/system?command=$dir/ssh&keyfile=$dir/id_ed25519"
	member="qemu+ssh://$RUSER@$(cat "$dir/host")/system?command=$dir/ssh&keyfile=$dir/id_ed25519"
	echo "$uri" >"$dir/system_uri"
	echo "$member" >"$dir/system_member_uri"
	for ((i = 0; i < START_WAIT * 5; i++)); do
		if answers_system "$dir" && virsh -c "$uri" version >/dev/null 2>&1 &&
			virsh -c "$member" version >/dev/null 2>&1; then
			return
		fi
		sleep 0.2
	done
	ssh_as root "$dir" tail -n 5 /var/log/libvirt/libvirtd.out /var/log/libvirt/libvirtd.log >&2 || true
	virsh -c "$uri" version >&2 || true
	die "the remote host's system libvirtd did not answer over SSH within ${START_WAIT}s"
}

cmd_down() {
	local dir=${1:?} ns pid n
	need_root
	[ -d "$dir" ] || return 0
	[ -e "$dir/$MARKER" ] || die "$dir is not a remote host's folder"
	ns=$(cat "$dir/ns" 2>/dev/null || true)
	if [ -n "$ns" ] && ip netns list | grep -qw "$ns"; then
		# Every process of the host, and only those: the ones in its netns.
		for pid in $(ip netns pids "$ns"); do kill -TERM "$pid" 2>/dev/null || true; done
		for _ in $(seq 50); do
			[ -z "$(ip netns pids "$ns")" ] && break
			sleep 0.1
		done
		for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
		n=${ns#vbr-}
		ip link del "vbr$n-b" 2>/dev/null || true
		ip netns del "$ns"
	fi
	rm -rf "$dir"
}

main() {
	case "${1:-}" in
	up) [ $# -eq 2 ] || { usage; exit 2; }; cmd_up "$2" ;;
	down) [ $# -eq 2 ] || { usage; exit 2; }; cmd_down "$2" ;;
	help | -h | --help) usage ;;
	*) usage; exit 2 ;;
	esac
}

main "$@"
