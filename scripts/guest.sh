#!/usr/bin/env bash
# guest.sh: a small Linux guest for the test bed, built from Debian's own
# packages (linux-image-amd64, busybox-static, qemu-guest-agent): a kernel,
# an initramfs and an ext4 disk image. Booted under TCG it mounts its disk
# (/dev/vda) read-write on /data and runs the QEMU guest agent, so that tests
# can freeze its filesystems, make it write (guest-exec) and see real guest
# writes in their backups.
#
#   guest.sh build OUTDIR    build OUTDIR/{vmlinuz,initrd.img,root.qcow2}
#
# The build is keyed by the content of everything that goes into it (this
# script, the kernel and its modules, busybox, qemu-ga and its libraries):
# when OUTDIR/key matches, a second run does nothing. Concurrent runs on one
# OUTDIR wait for each other (flock). Needs root only to read what it copies;
# scripts/install-deps.sh installs the packages.
set -euo pipefail

readonly PROG=${0##*/}
readonly MODULES=(virtio_pci virtio_blk virtio_console ext4)
readonly ROOT_SIZE=256M
readonly AGENT_PORT=org.qemu.guest_agent.0
tmp= # the build folder, removed on exit

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage:
  $PROG build OUTDIR
      Build (or find already built) the test guest in OUTDIR: vmlinuz, initrd.img
      and root.qcow2 (an ext4 disk for vda). Prints OUTDIR.
EOF
}

need_cmds() {
	local c missing=()
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing command(s): ${missing[*]} (see scripts/install-deps.sh)"
}

# kernel_version: the version of the kernel linux-image-amd64 depends on.
kernel_version() {
	local dep
	dep=$(dpkg-query -W -f '${Depends}' linux-image-amd64 2>/dev/null) ||
		die "linux-image-amd64 is not installed (see scripts/install-deps.sh)"
	[[ $dep =~ linux-image-([0-9][^ ,|]*) ]] || die "cannot read the kernel version from linux-image-amd64's Depends: $dep"
	printf '%s\n' "${BASH_REMATCH[1]}"
}

# module_files KVER: the module files, in load order (dependencies first), once each.
module_files() {
	local m line
	for m in "${MODULES[@]}"; do
		modprobe -S "$1" --show-depends "$m" || die "modprobe cannot resolve $m for kernel $1"
	done | while read -r line; do
		case $line in
		insmod\ *) line=${line#insmod }; printf '%s\n' "${line%% *}" ;;
		esac
	done | awk '!seen[$0]++'
}

# agent_files: qemu-ga and every library ldd names for it.
agent_files() {
	printf '%s\n' /usr/sbin/qemu-ga
	ldd /usr/sbin/qemu-ga | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

# The guest's /init: PID 1 for its whole life.
init_script() {
	cat <<'EOF'
#!/bin/sh
# The vbackup test guest: mount the disk, start the agent, stay.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# crc32c-intel fails under TCG (no SSE4.2): harmless, crc32c_generic follows.
while read -r m; do insmod "$m" 2>/dev/null || echo "vbguest: insmod $m failed"; done </modules.order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /data && echo "vbguest: /dev/vda mounted on /data" || echo "vbguest: cannot mount /dev/vda"
EOF
	cat <<EOF
port=
i=0
while [ -z "\$port" ] && [ \$i -lt 100 ]; do
	for p in /sys/class/virtio-ports/*; do
		[ "\$(cat "\$p/name" 2>/dev/null)" = $AGENT_PORT ] && port=/dev/\${p##*/}
	done
	[ -n "\$port" ] || sleep 0.1
	i=\$((i + 1))
done
echo "vbguest: agent port \${port:-missing}"
EOF
	cat <<'EOF'
# The agent in the foreground, restarted should it die; PID 1 never exits.
while :; do
	qemu-ga -m virtio-serial -p "$port" -t /run
	echo "vbguest: qemu-ga exited ($?); restarting"
	sleep 1
done
EOF
}

cmd_build() {
	[ $# -eq 1 ] || { usage; exit 2; }
	need_cmds dpkg-query modprobe ldd cpio gzip mke2fs qemu-img sha256sum flock
	local out kver kernel busybox key f
	local -a modules agent
	mkdir -p -- "$1"
	out=$(realpath -- "$1")
	kver=$(kernel_version)
	kernel=/boot/vmlinuz-$kver
	[ -r "$kernel" ] || die "no readable $kernel (is linux-image-$kver installed?)"
	busybox=/bin/busybox
	[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || die "no static busybox at $busybox (install busybox-static)"
	mapfile -t modules < <(module_files "$kver")
	mapfile -t agent < <(agent_files)
	[ ${#modules[@]} -gt 0 ] || die "no modules found for kernel $kver"

	exec 9>"$out/.lock"
	flock 9
	key=$({
		sha256sum -- "$0"
		sha256sum -- "$kernel" "$busybox" "${modules[@]}" "${agent[@]}"
	} | sha256sum | cut -d' ' -f1)
	if [ "$(cat -- "$out/key" 2>/dev/null || true)" = "$key" ] &&
		[ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/root.qcow2" ]; then
		printf '%s\n' "$out"
		return 0
	fi
	log "building the test guest (kernel $kver) in $out"
	tmp=$(mktemp -d "$out/build.XXXXXX")
	trap 'rm -rf -- "${tmp:-}"' EXIT

	local ir=$tmp/initramfs
	mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,var,data,tmp}
	ln -s ../run "$ir/var/run"
	cp -- "$busybox" "$ir/bin/busybox"
	local applet
	for applet in $("$busybox" --list); do
		[ -e "$ir/bin/$applet" ] || ln -s busybox "$ir/bin/$applet"
	done
	for f in "${modules[@]}"; do
		mkdir -p "$ir$(dirname -- "$f")"
		cp -- "$f" "$ir$f"
		printf '%s\n' "$f" >>"$ir/modules.order"
	done
	for f in "${agent[@]}"; do
		mkdir -p "$ir$(dirname -- "$f")"
		cp -L -- "$f" "$ir$f"
	done
	init_script >"$ir/init"
	chmod 0755 "$ir/init"
	(cd "$ir" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$tmp/initrd.img"

	local rootdir=$tmp/rootfs
	mkdir -p "$rootdir"
	printf 'vbackup test guest root, made by %s\n' "$PROG" >"$rootdir/README"
	truncate -s "$ROOT_SIZE" "$tmp/root.ext4"
	mke2fs -q -F -t ext4 -L vbguest -d "$rootdir" "$tmp/root.ext4"
	qemu-img convert -q -f raw -O qcow2 "$tmp/root.ext4" "$tmp/root.qcow2"

	cp -- "$kernel" "$tmp/vmlinuz"
	for f in vmlinuz initrd.img root.qcow2; do
		chmod 0644 "$tmp/$f"
		mv -f -- "$tmp/$f" "$out/$f"
	done
	printf '%s\n' "$key" >"$out/key"
	log "built the test guest in $out"
	printf '%s\n' "$out"
}

main() {
	[ $# -gt 0 ] || { usage; exit 2; }
	local cmd=$1
	shift
	case $cmd in
	build) cmd_build "$@" ;;
	-h | --help | help) usage ;;
	*) log "unknown sub-command '$cmd'"; usage; exit 2 ;;
	esac
}

main "$@"
