#!/usr/bin/env bash
# testbed.sh: a hermetic libvirtd + QEMU test bed for vbackup's integration
# tests. A bed is one folder, DIR, that holds all of its state: a session-mode
# libvirtd of the unprivileged user vbtest runs with HOME=DIR and
# XDG_RUNTIME_DIR=DIR/run; root (the tests) reaches it through its socket.
# Domains are TCG (type 'qemu') with no OS: block jobs and backups need no guest.
#
#   testbed.sh up DIR                      start the bed (idempotent); prints its URI
#   testbed.sh domain DIR NAME [DISK:FORMAT:SIZE ...]
#                                          define and start a domain (idempotent)
#   testbed.sh guest DIR NAME GUESTDIR     define and start a booted Linux guest (scripts/guest.sh)
#   testbed.sh write DIR DOMAIN DISK PATTERN OFFSET LENGTH
#                                          write PATTERN through the running disk
#   testbed.sh undomain DIR NAME           destroy and undefine a domain, remove its images
#   testbed.sh down DIR                    stop everything of the bed, remove DIR
#   testbed.sh restart DIR                 stop the bed's libvirtd and start it again; QEMUs go on
#   testbed.sh qemu-pid DIR NAME           the pid of the running domain's QEMU
#
# Everything but the user account lives under DIR. Needs root.
#
# Pull backups with TLS (backup-begin --pull --tls) work on a bed: 'up' makes a
# CA of the bed and sets the session daemon's qemu.conf
# (DIR/.config/libvirt/qemu.conf) to serve with its certificates and to require
# client certificates (backup_tls_x509_verify = 1). The files are named as QEMU
# and libnbd name them:
#   DIR/pki/backup   server side, the bed user's: ca-cert.pem server-cert.pem server-key.pem
#   DIR/pki/client   client side, root's:         ca-cert.pem client-cert.pem client-key.pem
# The server certificate is for localhost, 127.0.0.1 and ::1.
set -euo pipefail

readonly PROG=${0##*/}
readonly BED_USER=vbtest
readonly MARKER=.vbackup-testbed
readonly START_WAIT=${VBACKUP_TESTBED_START_WAIT:-30} # seconds for libvirtd to answer
readonly IDLE_TIMEOUT=${VBACKUP_TESTBED_IDLE_TIMEOUT:-3600} # libvirtd --timeout
readonly SAFE_PATH=/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	cat >&2 <<EOF
usage:
  $PROG up DIR
      Start a session-mode libvirtd of user '$BED_USER' whose state is all in DIR
      (creates the user and DIR if missing). Prints the connection URI and writes
      it to DIR/uri. Does nothing if the bed already answers. Makes the bed's
      TLS certificates for pull backups (client side in DIR/pki/client).
  $PROG domain DIR NAME [DISK:FORMAT:SIZE ...]
      Create the images under DIR/images/NAME (default: vda:qcow2:64M; FORMAT is
      qcow2 or raw), define a TCG domain NAME with those virtio disks and start it.
      Does nothing if NAME already runs. Prints NAME.
  $PROG guest DIR NAME GUESTDIR
      Define and start NAME, a Linux guest booted from what 'scripts/guest.sh build
      GUESTDIR' made, with its own copy of root.qcow2 as vda, a guest agent channel,
      and its serial console in DIR/images/NAME/console.log. Does nothing if NAME
      already runs. Prints NAME.
  $PROG write DIR DOMAIN DISK PATTERN OFFSET LENGTH
      Write the byte PATTERN (e.g. 0xcd) at OFFSET for LENGTH bytes (qemu-io sizes:
      4M, 512k, 4096) through the running domain's block backend, then flush.
  $PROG undomain DIR NAME
      Destroy and undefine NAME (with its checkpoint and snapshot metadata) and
      remove DIR/images/NAME. Succeeds if NAME does not exist.
  $PROG down DIR
      Destroy the bed's domains, stop its libvirtd and every process of the bed,
      remove DIR. Succeeds if DIR is already gone.
  $PROG restart DIR
      Stop the bed's libvirtd (SIGTERM, as a package upgrade's restart does) and
      start it again; the domains' QEMUs go on running. Prints the seconds libvirtd
      was away.
  $PROG qemu-pid DIR NAME
      Print the pid of the QEMU process of the running domain NAME.
Needs root. Exit status 2 on usage errors.
EOF
}

# usage_error MSG: a bad argument of a sub-command.
usage_error() {
	log "$* (see: $PROG help)"
	exit 2
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (it creates user '$BED_USER' and runs libvirtd as that user)"
}

need_cmds() {
	local c missing=()
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing command(s): ${missing[*]} (see scripts/install-deps.sh)"
}

# abs_dir DIR: DIR made absolute and normalised, without resolving symlinks of
# the last component's absence (realpath -m accepts a missing DIR).
abs_dir() {
	local d
	d=$(realpath -m -- "$1") || die "bad DIR '$1'"
	[ "$d" != / ] || die "refusing DIR '/'"
	# DIR goes into XML and into a URI unquoted: keep it plain.
	[[ $d =~ ^[A-Za-z0-9_./+-]+$ ]] || die "DIR '$d' has characters other than letters, digits and _ . / + -"
	printf '%s\n' "$d"
}

sock_of() { printf '%s/run/libvirt/libvirt-sock\n' "$1"; }
uri_of() { printf 'qemu+unix:///session?socket=%s\n' "$(sock_of "$1")"; }

# virsh_bed DIR ARGS...: virsh on the bed's daemon, as root.
virsh_bed() {
	local dir=$1
	shift
	virsh -q -c "$(uri_of "$dir")" "$@"
}

answers() {
	[ -S "$(sock_of "$1")" ] && timeout 10 virsh -c "$(uri_of "$1")" version >/dev/null 2>&1
}

# as_bed DIR CMD...: run CMD as the bed user, with a clean environment whose
# every location points into DIR.
as_bed() {
	local dir=$1
	shift
	runuser -u "$BED_USER" -- env -i \
		PATH="$SAFE_PATH" LANG=C \
		HOME="$dir" USER="$BED_USER" LOGNAME="$BED_USER" \
		XDG_RUNTIME_DIR="$dir/run" \
		XDG_CONFIG_HOME="$dir/.config" \
		XDG_CACHE_HOME="$dir/.cache" \
		XDG_DATA_HOME="$dir/.local/share" \
		XDG_STATE_HOME="$dir/.local/state" \
		TMPDIR="$dir/tmp" \
		"$@"
}

ensure_user() {
	local _
	for _ in 1 2 3 4 5; do
		id -u "$BED_USER" >/dev/null 2>&1 && return 0
		log "creating user '$BED_USER'"
		# No home folder: the bed's HOME is always DIR. A concurrent run may
		# create the user first (or hold the passwd lock): check again.
		useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
			--comment 'vbackup test bed' "$BED_USER" 2>/dev/null || sleep 0.2
	done
	id -u "$BED_USER" >/dev/null 2>&1 || die "could not create user '$BED_USER'"
}

# ensure_dir DIR: create DIR for the bed, or accept it if it is empty or already
# a bed (the marker file). Never takes over a folder that holds something else.
ensure_dir() {
	local dir=$1
	if [ -e "$dir" ] && [ ! -d "$dir" ]; then
		die "'$dir' exists and is not a folder"
	fi
	if [ -d "$dir" ] && [ ! -e "$dir/$MARKER" ] && [ -n "$(ls -A -- "$dir")" ]; then
		die "'$dir' is not empty and is not a test bed (no $MARKER): refusing to use it"
	fi
	mkdir -p -- "$dir"
	touch -- "$dir/$MARKER"
	chown "$BED_USER:" -- "$dir"
	chmod 0755 -- "$dir"
	if ! runuser -u "$BED_USER" -- test -w "$dir" -a -x "$dir"; then
		die "user '$BED_USER' cannot write '$dir' (is a parent folder closed to others?)"
	fi
	as_bed "$dir" mkdir -p -m 0700 -- "$dir/run" "$dir/tmp"
	as_bed "$dir" mkdir -p -m 0755 -- "$dir/images"
}

# The longest unix socket of a bed is a domain's QEMU monitor,
# DIR/.config/libvirt/qemu/lib/domain-<id>-<first 20 chars of name>/monitor.sock,
# that is DIR + 67 + digits of <id>; sun_path holds 107 characters. (Seen here:
# a 40-character DIR fails to start a domain with a long name.)
check_dir_length() {
	local dir=$1
	[ ${#dir} -le 32 ] || die "DIR '$dir' is too long (${#dir} > 32 characters): the unix sockets of libvirt and QEMU under it would not fit"
}

# issue_cert DIR NAME CN EXTENSIONS...: a P-256 key DIR/NAME/NAME-key.pem and
# its certificate DIR/NAME/NAME-cert.pem, signed by the CA in DIR (ca-key.pem,
# ca-cert.pem), or the CA itself for NAME ca. ECDSA keys take milliseconds to
# make, where RSA ones take a good part of a second.
issue_cert() {
	local dir=$1 name=$2 cn=$3 out=$1/$2 ext
	shift 3
	[ "$name" != ca ] || out=$dir
	ext=$out/$name.ext
	printf '%s\n' "$@" >"$ext" || return 1
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$name-key.pem" 2>/dev/null || return 1
	if [ "$name" = ca ]; then
		openssl req -new -key "$out/ca-key.pem" -subj "/CN=$cn" 2>/dev/null |
			openssl x509 -req -signkey "$out/ca-key.pem" -days 3650 -extfile "$ext" \
				-out "$out/ca-cert.pem" 2>/dev/null || return 1
	else
		openssl req -new -key "$out/$name-key.pem" -subj "/CN=$cn" 2>/dev/null |
			openssl x509 -req -CA "$dir/ca-cert.pem" -CAkey "$dir/ca-key.pem" \
				-set_serial "0x$(openssl rand -hex 8)" -days 3650 -extfile "$ext" \
				-out "$out/$name-cert.pem" 2>/dev/null || return 1
		cp -- "$dir/ca-cert.pem" "$out/ca-cert.pem" || return 1
	fi
	rm -f -- "$ext"
}

# ensure_tls DIR: the bed's CA, server and client certificates (made once; see
# the top of this file) and the session daemon's qemu.conf that uses them.
# libvirtd reads qemu.conf only when it starts: call before starting it.
ensure_tls() {
	local dir=$1 pki=$1/pki new=$1/pki.new conf=$1/.config/libvirt/qemu.conf want
	local leaf='basicConstraints=critical,CA:FALSE'
	# QEMU (GnuTLS) checks the key usages of its own certificate.
	local usage='keyUsage=critical,digitalSignature,keyEncipherment'
	if [ ! -e "$pki/client/client-key.pem" ]; then
		# Made aside and renamed: an interrupted run leaves no half a PKI.
		rm -rf -- "$new" "$pki"
		mkdir -m 0700 -- "$new" "$new/server" "$new/client" || die "cannot make $new"
		if ! (
			umask 077
			issue_cert "$new" ca 'vbackup test bed CA' \
				'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign' 'subjectKeyIdentifier=hash' &&
				issue_cert "$new" server localhost "$leaf" "$usage" 'extendedKeyUsage=serverAuth' \
					'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' &&
				issue_cert "$new" client 'vbackup test bed client' "$leaf" "$usage" 'extendedKeyUsage=clientAuth'
		); then
			die "could not make the bed's TLS certificates in $new (openssl failed)"
		fi
		# QEMU runs as the bed user and reads the server side (libvirt's
		# name for it: backup); the client side and the CA key stay root's.
		mv -T -- "$new/server" "$new/backup"
		chown -R "$BED_USER:" -- "$new/backup"
		chmod 0755 -- "$new"
		mv -T -- "$new" "$pki"
	fi
	want="# Written by $PROG: pull backups with TLS use the bed's certificates.
backup_tls_x509_cert_dir = \"$pki/backup\"
backup_tls_x509_verify = 1"
	if [ "$(cat -- "$conf" 2>/dev/null)" != "$want" ]; then
		as_bed "$dir" mkdir -p -- "${conf%/*}"
		printf '%s\n' "$want" | as_bed "$dir" tee -- "$conf" >/dev/null
	fi
}

cmd_up() {
	[ $# -eq 1 ] || usage_error "up: expected DIR"
	need_root
	need_cmds libvirtd virsh runuser setsid useradd qemu-system-x86_64 qemu-img realpath timeout flock openssl
	local dir pid pidfile logf deadline
	dir=$(abs_dir "$1")
	check_dir_length "$dir"
	ensure_user
	ensure_dir "$dir"
	if answers "$dir"; then
		uri_of "$dir" >"$dir/uri"
		uri_of "$dir"
		return 0
	fi
	# One starter at a time for a DIR; the daemon must not inherit the lock.
	exec 9>>"$dir/.lock"
	flock -w 60 9 || die "could not lock $dir/.lock"
	if answers "$dir"; then
		exec 9>&-
		uri_of "$dir" >"$dir/uri"
		uri_of "$dir"
		return 0
	fi
	pidfile=$dir/run/libvirtd.pid
	logf=$dir/libvirtd.log
	# A daemon that still runs but does not answer is of no use: stop it first.
	stop_pidfile "$pidfile" libvirtd
	ensure_tls "$dir"
	log "starting libvirtd for $dir"
	# setsid: the daemon leaves our session so that it outlives this script.
	# shellcheck disable=SC2016 # the inner sh expands $1..$3 and $!
	pid=$(as_bed "$dir" sh -c 'setsid libvirtd --timeout "$1" --pid-file "$2" >"$3" 2>&1 </dev/null & echo $!' \
		sh "$IDLE_TIMEOUT" "$pidfile" "$logf" 9>&-)
	deadline=$((SECONDS + START_WAIT))
	until answers "$dir"; do
		if [ $SECONDS -ge $deadline ]; then
			log "libvirtd did not answer on $(sock_of "$dir") within ${START_WAIT}s; tail of $logf:"
			tail -n 20 -- "$logf" >&2 2>/dev/null || true
			exit 1
		fi
		if ! alive "$pid"; then
			log "libvirtd exited; tail of $logf:"
			tail -n 20 -- "$logf" >&2 2>/dev/null || true
			exit 1
		fi
		sleep 0.1
	done
	exec 9>&-
	uri_of "$dir" >"$dir/uri"
	log "libvirtd answers"
	uri_of "$dir"
}

valid_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$ ]]; }

# bed_dir DIR: the absolute DIR of a bed that answers, or die.
bed_dir() {
	local dir
	dir=$(abs_dir "$1")
	[ -e "$dir/$MARKER" ] || die "'$dir' is not a test bed (run: $PROG up $dir)"
	answers "$dir" || die "the bed in '$dir' does not answer (run: $PROG up $dir)"
	printf '%s\n' "$dir"
}

domain_state() { virsh_bed "$1" domstate "$2" 2>/dev/null | head -n 1 || true; }

cmd_domain() {
	[ $# -ge 2 ] || usage_error "domain: expected DIR NAME [DISK:FORMAT:SIZE ...]"
	need_root
	need_cmds virsh qemu-img runuser
	local arg=$1 dir name state spec disk format size img imgdir xml
	local -a specs disks_xml=()
	local -A seen=()
	name=$2
	valid_name "$name" || usage_error "domain: bad NAME '$name' (letters, digits, '_', '.', '-'; at most 80)"
	shift 2
	specs=("$@")
	[ ${#specs[@]} -gt 0 ] || specs=(vda:qcow2:64M)
	for spec in "${specs[@]}"; do
		[[ $spec =~ ^(vd[a-z]{1,2}):(qcow2|raw):([0-9]+[kKMGT]?)$ ]] ||
			usage_error "domain: bad disk '$spec' (want DISK:FORMAT:SIZE, e.g. vda:qcow2:64M; FORMAT qcow2 or raw)"
		[ -z "${seen[${BASH_REMATCH[1]}]:-}" ] || usage_error "domain: disk ${BASH_REMATCH[1]} given twice"
		seen[${BASH_REMATCH[1]}]=1
	done
	# Self-healing: a daemon that went away (idle timeout) comes back.
	dir=$(abs_dir "$arg")
	[ -e "$dir/$MARKER" ] || die "'$dir' is not a test bed (run: $PROG up $dir)"
	cmd_up "$dir" >/dev/null
	dir=$(bed_dir "$dir")

	state=$(domain_state "$dir" "$name")
	if [ "$state" = running ]; then
		printf '%s\n' "$name"
		return 0
	fi
	imgdir=$dir/images/$name
	if [ -z "$state" ]; then
		as_bed "$dir" mkdir -p -- "$imgdir"
		for spec in "${specs[@]}"; do
			IFS=: read -r disk format size <<<"$spec"
			img=$imgdir/$disk.$format
			if [ ! -e "$img" ]; then
				as_bed "$dir" qemu-img create -q -f "$format" -- "$img" "$size" ||
					die "could not create $img"
			fi
			disks_xml+=("    <disk type='file' device='disk'>
      <driver name='qemu' type='$format'/>
      <source file='$img'/>
      <target dev='$disk' bus='virtio'/>
    </disk>")
		done
		xml=$imgdir/domain.xml
		{
			cat <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
EOF
			printf '%s\n' "${disks_xml[@]}"
			cat <<EOF
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
		} | as_bed "$dir" tee -- "$xml" >/dev/null
		virsh_bed "$dir" define "$xml" >/dev/null || die "could not define domain '$name' (XML in $xml)"
	fi
	if ! virsh_bed "$dir" start "$name" >/dev/null; then
		log "could not start domain '$name'; tail of its QEMU log:"
		tail -n 20 -- "$dir/.cache/libvirt/qemu/log/$name.log" >&2 2>/dev/null || true
		exit 1
	fi
	printf '%s\n' "$name"
}

# cmd_guest DIR NAME GUESTDIR: a booted Linux guest (scripts/guest.sh) with
# its agent channel, its console in a file, and its own copy of the disk.
cmd_guest() {
	[ $# -eq 3 ] || usage_error "guest: expected DIR NAME GUESTDIR"
	need_root
	need_cmds virsh runuser
	local dir name=$2 gdir state imgdir f xml sock
	valid_name "$name" || usage_error "guest: bad NAME '$name' (letters, digits, '_', '.', '-'; at most 80)"
	gdir=$(realpath -- "$3") || die "guest: no folder '$3'"
	for f in vmlinuz initrd.img root.qcow2; do
		[ -s "$gdir/$f" ] || die "guest: no $gdir/$f (run: scripts/guest.sh build $gdir)"
	done
	dir=$(abs_dir "$1")
	[ -e "$dir/$MARKER" ] || die "'$dir' is not a test bed (run: $PROG up $dir)"
	cmd_up "$dir" >/dev/null
	dir=$(bed_dir "$dir")
	state=$(domain_state "$dir" "$name")
	if [ "$state" = running ]; then
		printf '%s\n' "$name"
		return 0
	fi
	imgdir=$dir/images/$name
	if [ -z "$state" ]; then
		as_bed "$dir" mkdir -p -- "$imgdir"
		# Copies of the bed user's own: root's cache may be out of its reach.
		for f in vmlinuz initrd.img; do
			as_bed "$dir" tee -- "$imgdir/$f" <"$gdir/$f" >/dev/null
		done
		as_bed "$dir" tee -- "$imgdir/vda.qcow2" <"$gdir/root.qcow2" >/dev/null
		# libvirt's own agent socket path grows with the domain's ID and can
		# pass the 107 bytes a unix socket path may have: a short one.
		as_bed "$dir" mkdir -p -- "$dir/ga"
		sock=$dir/ga/$(printf '%s' "$name" | sha256sum | cut -c1-16).sock
		xml=$imgdir/domain.xml
		as_bed "$dir" tee -- "$xml" >/dev/null <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>$imgdir/vmlinuz</kernel>
    <initrd>$imgdir/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$imgdir/vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <source mode='bind' path='$sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'>
      <source path='$imgdir/console.log'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
		virsh_bed "$dir" define "$xml" >/dev/null || die "could not define guest '$name' (XML in $xml)"
	fi
	if ! virsh_bed "$dir" start "$name" >/dev/null; then
		log "could not start guest '$name'; tail of its QEMU log:"
		tail -n 20 -- "$dir/.cache/libvirt/qemu/log/$name.log" >&2 2>/dev/null || true
		exit 1
	fi
	printf '%s\n' "$name"
}

# disk_alias DIR DOMAIN DISK: the device alias (virtio-disk0...) of DISK in the
# live XML.
disk_alias() {
	local alias
	alias=$(virsh_bed "$1" dumpxml "$2" |
		xmllint --xpath "string(/domain/devices/disk[target/@dev='$3']/alias/@name)" - 2>/dev/null) || true
	[ -n "$alias" ] || die "domain '$2' has no disk '$3' with an alias (is it running?)"
	printf '%s\n' "$alias"
}

# bytes SIZE: a qemu-io size (4096, 512k, 4M, 1G) in bytes.
bytes() {
	[[ $1 =~ ^([0-9]+)([kKMGT]?)$ ]] || return 1
	local n=$((10#${BASH_REMATCH[1]}))
	case ${BASH_REMATCH[2]} in
	k | K) n=$((n << 10)) ;;
	M) n=$((n << 20)) ;;
	G) n=$((n << 30)) ;;
	T) n=$((n << 40)) ;;
	esac
	printf '%s\n' "$n"
}

cmd_write() {
	[ $# -eq 6 ] || usage_error "write: expected DIR DOMAIN DISK PATTERN OFFSET LENGTH"
	local dir dom=$2 disk=$3 pattern=$4 offset length alias qdev out capacity qlog before want deadline
	valid_name "$dom" || usage_error "write: bad DOMAIN '$dom'"
	[[ $disk =~ ^[a-z]+[a-z0-9]*$ ]] || usage_error "write: bad DISK '$disk'"
	if ! [[ $pattern =~ ^(0[xX][0-9a-fA-F]{1,2}|0|[1-9][0-9]{0,2})$ ]] || [ $((pattern)) -gt 255 ]; then
		usage_error "write: bad PATTERN '$pattern' (a byte: 0xcd or 205)"
	fi
	offset=$(bytes "$5") || usage_error "write: bad OFFSET '$5'"
	length=$(bytes "$6") || usage_error "write: bad LENGTH '$6'"
	[ "$length" -gt 0 ] || usage_error "write: LENGTH must be positive"
	need_root
	need_cmds virsh xmllint
	dir=$(bed_dir "$1")
	[ "$(domain_state "$dir" "$dom")" = running ] || die "domain '$dom' is not running"
	alias=$(disk_alias "$dir" "$dom" "$disk")
	capacity=$(virsh_bed "$dir" domblkinfo "$dom" "$disk" | awk '$1 == "Capacity:" { print $2 }')
	[ -n "$capacity" ] || die "cannot read the capacity of $dom/$disk"
	[ $((offset + length)) -le "$capacity" ] ||
		die "write on $dom/$disk: $offset+$length is past the end of the disk ($capacity bytes)"
	qdev=/machine/peripheral/$alias/virtio-backend
	# qemu-io prints its report on QEMU's stdout, which libvirt sends to the
	# domain's log; the monitor only reports errors of the command itself.
	qlog=$dir/.cache/libvirt/qemu/log/$dom.log
	before=$(stat -c %s -- "$qlog" 2>/dev/null || echo 0)
	out=$(virsh_bed "$dir" qemu-monitor-command "$dom" --hmp \
		"qemu-io -d $qdev \"write -P $pattern $offset $length\"" 2>&1) ||
		die "write on $dom/$disk failed: $out"
	[ -z "${out//[[:space:]]/}" ] || die "write on $dom/$disk failed: $out"
	want="wrote $length/$length bytes at offset $offset"
	deadline=$((SECONDS + 10))
	until tail -c +$((before + 1)) -- "$qlog" 2>/dev/null | grep -qF -- "$want"; do
		if tail -c +$((before + 1)) -- "$qlog" 2>/dev/null | grep -q 'write failed'; then
			die "write on $dom/$disk failed: $(tail -c +$((before + 1)) -- "$qlog" | grep 'write failed' | head -n 1)"
		fi
		[ $SECONDS -lt $deadline ] || die "write on $dom/$disk: no '$want' in $qlog"
		sleep 0.05
	done
	# Make the data and the qcow2 metadata visible to readers of the image file.
	out=$(virsh_bed "$dir" qemu-monitor-command "$dom" --hmp "qemu-io -d $qdev flush" 2>&1) ||
		die "flush on $dom/$disk failed: $out"
	[ -z "${out//[[:space:]]/}" ] || die "flush on $dom/$disk failed: $out"
}

cmd_undomain() {
	[ $# -eq 2 ] || usage_error "undomain: expected DIR NAME"
	local dir name=$2 state out
	valid_name "$name" || usage_error "undomain: bad NAME '$name'"
	need_root
	need_cmds virsh
	dir=$(bed_dir "$1")
	state=$(domain_state "$dir" "$name")
	if [ -n "$state" ]; then
		if [ "$state" != "shut off" ]; then
			out=$(virsh_bed "$dir" destroy "$name" 2>&1) || die "destroy $name: $out"
		fi
		out=$(virsh_bed "$dir" undefine "$name" --checkpoints-metadata --snapshots-metadata 2>&1) ||
			die "undefine $name: $out"
	fi
	rm -rf -- "${dir:?}/images/$name"
}

# stop_pidfile FILE WHAT: stop the process named in FILE if it runs as the bed user.
stop_pidfile() {
	local pid
	pid=$(cat -- "$1" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	if [ "$(stat -c %U "/proc/$pid" 2>/dev/null || true)" = "$BED_USER" ]; then
		log "stopping $2 (pid $pid)"
		kill_wait TERM 10 "$pid" || kill_wait KILL 5 "$pid" || true
	fi
}

# alive PID: PID runs (a zombie, left unreaped by a poor init, does not).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

# kill_wait SIG SECONDS PID...: send SIG, wait until all PIDs are gone.
kill_wait() {
	local sig=$1 secs=$2 pid left deadline
	shift 2
	kill -s "$sig" -- "$@" 2>/dev/null || true
	deadline=$((SECONDS + secs))
	while :; do
		left=0
		for pid in "$@"; do
			alive "$pid" && left=1
		done
		[ $left -eq 1 ] || return 0
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

# bed_pids DIR: processes of the bed user that belong to DIR: an environment
# value or a command-line argument that is DIR or lies under DIR/. libvirtd and
# virtlogd carry HOME=DIR; QEMU carries DIR paths in both.
bed_pids() {
	local dir=$1 uid p pid
	uid=$(id -u "$BED_USER" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[ "$(stat -c %u "$p" 2>/dev/null || true)" = "$uid" ] || continue
		[ "$pid" != $$ ] || continue
		if { tr '\0' '\n' <"$p/environ" | sed -n 's/^[^=]*=//p'; tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null |
			awk -v d="$dir" 'BEGIN { r = 1 } $0 == d || index($0, d "/") { r = 0; exit } END { exit r }'; then
			printf '%s\n' "$pid"
		fi
	done
}

cmd_down() {
	[ $# -eq 1 ] || usage_error "down: expected DIR"
	need_root
	local dir dom pid
	local -a pids
	dir=$(abs_dir "$1")
	if [ -e "$dir" ] && [ ! -e "$dir/$MARKER" ]; then
		die "'$dir' is not a test bed (no $MARKER): refusing to remove it"
	fi
	if [ -e "$dir" ] && answers "$dir"; then
		# Let libvirt stop each domain (in parallel: each takes over a second);
		# the sweep below is the net.
		while read -r dom; do
			[ -z "$dom" ] || virsh_bed "$dir" destroy "$dom" >/dev/null 2>&1 &
		done < <(virsh_bed "$dir" list --name --state-running 2>/dev/null || true)
		wait
	fi
	# libvirtd (its pid file) and every other process of the bed, all at once:
	# libvirtd and virtlogd take about two seconds each to stop.
	mapfile -t pids < <(
		pid=$(cat -- "$dir/run/libvirtd.pid" 2>/dev/null || true)
		if [[ $pid =~ ^[0-9]+$ ]] && [ "$(stat -c %U "/proc/$pid" 2>/dev/null || true)" = "$BED_USER" ]; then
			printf '%s\n' "$pid"
		fi
		bed_pids "$dir"
	)
	if [ ${#pids[@]} -gt 0 ]; then
		mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
		log "stopping the bed's processes: ${pids[*]}"
		kill_wait TERM 10 "${pids[@]}" || kill_wait KILL 5 "${pids[@]}" || true
		mapfile -t pids < <(bed_pids "$dir")
		[ ${#pids[@]} -eq 0 ] || die "processes of the bed still run: ${pids[*]}"
	fi
	if [ -e "$dir" ]; then
		rm -rf -- "$dir"
		log "removed $dir"
	fi
}

# cmd_restart DIR: libvirtd goes away and comes back, as when a package
# upgrade restarts it; a session daemon leaves its domains' QEMUs running.
cmd_restart() {
	[ $# -eq 1 ] || usage_error "restart: expected DIR"
	need_root
	local dir pid start
	dir=$(bed_dir "$1")
	pid=$(cat -- "$dir/run/libvirtd.pid" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] && [ "$(stat -c %U "/proc/$pid" 2>/dev/null || true)" = "$BED_USER" ] ||
		die "restart: no libvirtd of the bed in $dir/run/libvirtd.pid"
	start=$EPOCHREALTIME
	kill_wait TERM 20 "$pid" || die "restart: libvirtd (pid $pid) did not stop within 20s"
	cmd_up "$dir" >/dev/null
	awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", b - a }'
}

# cmd_qemu_pid DIR NAME: the pid of NAME's QEMU, from libvirt's pid file.
cmd_qemu_pid() {
	[ $# -eq 2 ] || usage_error "qemu-pid: expected DIR NAME"
	local dir name=$2 pid
	valid_name "$name" || usage_error "qemu-pid: bad NAME '$name'"
	need_root
	dir=$(bed_dir "$1")
	pid=$(cat -- "$dir/run/libvirt/qemu/run/$name.pid" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || die "domain '$name' has no running QEMU"
	printf '%s\n' "$pid"
}

main() {
	if [ $# -eq 0 ]; then
		log "missing sub-command"
		usage
		exit 2
	fi
	local cmd=$1
	shift
	case $cmd in
	up) cmd_up "$@" ;;
	domain) cmd_domain "$@" ;;
	guest) cmd_guest "$@" ;;
	write) cmd_write "$@" ;;
	undomain) cmd_undomain "$@" ;;
	down) cmd_down "$@" ;;
	restart) cmd_restart "$@" ;;
	qemu-pid) cmd_qemu_pid "$@" ;;
	-h | --help | help) usage ;;
	*)
		log "unknown sub-command '$cmd'"
		usage
		exit 2
		;;
	esac
}

main "$@"
