#!/usr/bin/env bash
# bench/remote.sh: a full backup from a backup server of a domain on another
# host (scripts/remotehost.sh: its own network namespace, reached over SSH),
# side by side in one run, alternated, median of RUNS each:
#   vbackup -c qemu+ssh://... backup DOM --to DIR     (the SSH path: socket
#                 made on the host, exports read through an ssh -L forward)
#   nbdcopy of the same pull export through the same kind of ssh forward to a
#                 local raw file (the reference for the SSH path; target <= 1.2x)
#   vbackup run on the hypervisor itself (started through ssh), into its own
#                 folder there: what the SSH path costs over a local backup
# Both sides' folders are on tmpfs (the host's /tmp, and OUT here, default
# /dev/shm): the disks of this machine are not what is measured.
# Disk: SIZE_MB virtual with DATA_MB of random data (default 4096/2048).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}
positive RUNS SIZE_MB DATA_MB
[ "$DATA_MB" -le "$SIZE_MB" ] || die "DATA_MB ($DATA_MB) is larger than SIZE_MB ($SIZE_MB)"
prepare
rh=$(mktemp -d /tmp/vbr-bench.XXXXXX)
out=$(mktemp -d "${OUT:-/dev/shm}/vbackup-remote-bench.XXXXXX")
log=$out/log
fw=
cleanup() {
  [ -n "$fw" ] && kill "$fw" 2>/dev/null || true
  scripts/remotehost.sh down "$rh" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
uri=$(scripts/remotehost.sh up "$rh")
addr=$(cat "$rh/host")
on() { "$rh/ssh" -i "$rh/id_ed25519" -T "vbremote@$addr" "$@"; }
rvirsh() { on virsh -q -c qemu:///session "$@"; }

echo "bench: a domain on the remote host, ${DATA_MB} MiB of random data in ${SIZE_MB} MiB..." >&2
img=/home/vbremote/images/bench/vda.qcow2
on "mkdir -p ~/images/bench && head -c $((DATA_MB << 20)) /dev/urandom > ~/r.raw && truncate -s ${SIZE_MB}M ~/r.raw &&
  qemu-img convert -f raw -O qcow2 ~/r.raw $img && rm ~/r.raw && cat > ~/images/bench/d.xml" <<XML
<domain type='qemu'><name>bench</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$img'/><target dev='vda' bus='virtio'/></disk></devices></domain>
XML
rvirsh define /home/vbremote/images/bench/d.xml >/dev/null
rvirsh start bench >/dev/null
on 'cat > ~/vbackup && chmod 755 ~/vbackup' <"$vb"

# The reference's forward: ssh -N -L as vbackup runs it (with its cipher
# preference where the CPU has AES: sshhost/cipher.go), to the socket
# vbackup's own pull job has on the host.
ciphers=
grep -qw aes /proc/cpuinfo && ciphers="-o Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
rsock=$(on 'echo /tmp/vbackup-$(id -u)/bench/nbd.sock')
lsock=$out/ref.sock
ref_copy() {
  "$vb" -c "$uri" backup-begin bench --pull --quiesce no >/dev/null
  rm -f "$lsock"
  "$rh/ssh" -i "$rh/id_ed25519" -T -N -o ExitOnForwardFailure=yes -o StreamLocalBindUnlink=yes $ciphers \
    -L "$lsock:$rsock" "vbremote@$addr" & fw=$!
  for _ in $(seq 300); do [ -S "$lsock" ] && break; sleep 0.01; done
  local s; settle; s=$(now)
  nbdcopy "nbd+unix:///vda?socket=$lsock" "$out/ref.raw" || die "nbdcopy failed"
  T=$(echo "$(now) - $s" | bc)
  kill "$fw"; wait "$fw" 2>/dev/null || true; fw=
  "$vb" -c "$uri" backup-end bench >/dev/null
  rm -f "$out/ref.raw"
}

t_ssh= t_ref= t_local=
for i in $(seq "$RUNS"); do
  timed "$vb" -c "$uri" backup bench --to "$out/b$i" --quiesce no -q; t_ssh+=" $T"
  [ "$i" -lt "$RUNS" ] && rm -rf "$out/b$i"
  for c in $(rvirsh checkpoint-list --name bench); do rvirsh checkpoint-delete bench "$c" >/dev/null; done
  ref_copy; t_ref+=" $T"
  on "sync; rm -rf /tmp/lb"
  timed on "./vbackup -c qemu:///session backup bench --to /tmp/lb --quiesce no -q"; t_local+=" $T"
  for c in $(rvirsh checkpoint-list --name bench); do rvirsh checkpoint-delete bench "$c" >/dev/null; done
done
# The last SSH backup, restored, holds what the remote disk holds.
rvirsh suspend bench >/dev/null
want=$(on "qemu-img convert -U -O raw $img /tmp/src.raw && sha256sum < /tmp/src.raw; rm -f /tmp/src.raw" | cut -d' ' -f1)
rvirsh resume bench >/dev/null
"$vb" restore --from "$out/b$RUNS" --to "$out/restored" -q
qemu-img convert -O raw "$out/restored/vda.qcow2" "$out/restored.raw"
got=$(sha256sum <"$out/restored.raw" | cut -d' ' -f1)
[ "$got" = "$want" ] && same=identical || same=DIFFERENT

ssh_m=$(m "$t_ssh") ref_m=$(m "$t_ref") local_m=$(m "$t_local")
echo "runs (s): vbackup over SSH$t_ssh | nbdcopy through the forward$t_ref | vbackup on the hypervisor$t_local" >&2
printf '\nremote full backup, %s MiB disk with %s MiB random data, median of %s alternated runs\n' "$SIZE_MB" "$DATA_MB" "$RUNS"
printf '%-48s %7.2fs\n' "vbackup -c qemu+ssh:// backup (the SSH path)" "$ssh_m"
printf '%-48s %7.2fs   ratio %.2fx (target <= 1.2x)\n' "nbdcopy of the export through ssh -L, to raw" "$ref_m" "$(r "$ssh_m" "$ref_m")"
printf '%-48s %7.2fs   ratio %.2fx (SSH path / local)\n' "vbackup backup on the hypervisor itself" "$local_m" "$(r "$ssh_m" "$local_m")"
printf 'restored SSH backup vs the remote disk (sha256 of raw, read through SSH): %s\n' "$same"
