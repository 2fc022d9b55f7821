#!/usr/bin/env bash
# bench/mount.sh: getting one file back without copying the disk.
# A domain's disk of SIZE_MB holds an ext4 filled with DATA_MB of random
# files (made with mke2fs -d) and one 1 MiB file; it is backed up once.
# Then, side by side in one run, each measured RUNS times, alternated,
# after sync and drop_caches:
#   vbackup mount until the files are there (and umount after it)
#       against a full vbackup restore of the disk (what a file cost before);
#   vbackup cat of the 1 MiB file
#       against the same file read by cat from the restored image, mounted.
# Reported: medians and ratios. The issue's targets: mount ready in under
# 3 s, cat of a 1 MiB file in under 2 s.
#
# Usage: bench/mount.sh   (as root)
# Environment: RUNS (3), SIZE_MB (4096), DATA_MB (2048). A quick check:
# SIZE_MB=512 DATA_MB=256 RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}

die() { echo "bench: $*" >&2; exit 1; }
for v in RUNS SIZE_MB DATA_MB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[ "$DATA_MB" -lt "$SIZE_MB" ] || die "DATA_MB ($DATA_MB) must be below SIZE_MB ($SIZE_MB): the filesystem needs room"
[ "$(id -u)" -eq 0 ] || die "must run as root (the test bed, mount, drop_caches)"
make -s build >/dev/null # installs libvirt, QEMU, bc, ... (scripts/install-deps.sh)
vb=$PWD/bin/vbackup

dom=vbm-$$
bed=$(mktemp -d /tmp/vbm.XXXXXX)
mnt=$bed/mnt ref=$bed/ref
cleanup() {
  "$vb" umount "$mnt" >/dev/null 2>&1 || true
  umount "$ref" >/dev/null 2>&1 || true
  scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true
  rm -rf "/run/vbackup/$dom" "$bed"
}
trap cleanup EXIT
export LIBVIRT_DEFAULT_URI=$(scripts/testbed.sh up "$bed" 2>/dev/null)
scripts/testbed.sh domain "$bed" "$dom" "vda:qcow2:${SIZE_MB}M" >/dev/null
img=$bed/images/$dom/vda.qcow2

echo "bench: an ext4 of ${SIZE_MB} MiB holding ${DATA_MB} MiB of random files..." >&2
src=$bed/src
mkdir -p "$src/data" "$src/etc"
for i in $(seq 0 $(((DATA_MB - 1) / 64))); do
  head -c "$((64 << 20))" /dev/urandom >"$src/data/f$i.bin"
done
head -c 1M /dev/urandom >"$src/etc/one-mib.bin"
truncate -s "${SIZE_MB}M" "$bed/fs.raw"
mke2fs -q -F -t ext4 -d "$src" "$bed/fs.raw"
rm -rf "$src/data"
virsh -q destroy "$dom" >/dev/null
qemu-img convert -n --target-is-zero -f raw -O qcow2 "$bed/fs.raw" "$img"
rm -f "$bed/fs.raw"
virsh -q start "$dom" >/dev/null
out=$bed/backups
"$vb" backup "$dom" --to "$out" --quiet
mkdir -p "$mnt" "$ref"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m() { echo "$1" | tr ' ' '\n' | grep . | median; }
settle() { sync; echo 3 >/proc/sys/vm/drop_caches; }
log=$bed/cmd.log
timed() {
  local s
  settle
  s=$(now)
  "$@" >"$log" 2>&1 || { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  T=$(echo "$(now) - $s" | bc)
}
mount_ready() { "$vb" mount --from "$out" "$mnt" && [ -s "$mnt/etc/one-mib.bin" ]; }
restore_full() { rm -rf "$bed/r"; "$vb" restore --from "$out" --to "$bed/r" --quiet; }
vb_cat() { "$vb" cat --from "$out" /etc/one-mib.bin >"$bed/cat.out"; cmp -s "$bed/cat.out" "$src/etc/one-mib.bin"; }
ref_cat() { cat "$ref/etc/one-mib.bin" >"$bed/cat.out"; cmp -s "$bed/cat.out" "$src/etc/one-mib.bin"; }

declare -A t
for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  if [ $((i % 2)) -eq 1 ]; then
    timed mount_ready; t[mount]+="$T "
    timed "$vb" umount "$mnt"; t[umount]+="$T "
    timed restore_full; t[restore]+="$T "
  else
    timed restore_full; t[restore]+="$T "
    timed mount_ready; t[mount]+="$T "
    timed "$vb" umount "$mnt"; t[umount]+="$T "
  fi
  # The reference cat reads the restored image, mounted, with a cold cache.
  qemu-img convert -f qcow2 -O raw "$bed/r/vda.qcow2" "$bed/r/vda.raw"
  mount -o loop,ro "$bed/r/vda.raw" "$ref"
  if [ $((i % 2)) -eq 1 ]; then
    timed vb_cat; t[cat]+="$T "
    timed ref_cat; t[refcat]+="$T "
  else
    timed ref_cat; t[refcat]+="$T "
    timed vb_cat; t[cat]+="$T "
  fi
  umount "$ref"
  rm -rf "$bed/r"
done
"$vb" verify --from "$out" >/dev/null 2>&1 || die "verify failed after the runs"

r() { echo "scale=2; $1 / $2" | bc; }
echo "runs (s): mount ${t[mount]}| umount ${t[umount]}| restore ${t[restore]}| cat ${t[cat]}| cat of the restored ${t[refcat]}" >&2
printf '%-60s %10s %10s %8s\n' "case (${SIZE_MB} MiB disk, ${DATA_MB} MiB of files)" vbackup reference ratio
printf '%-60s %9.2fs %9.2fs %7.2fx\n' "mount until the files show vs a full restore" "$(m "${t[mount]}")" "$(m "${t[restore]}")" "$(r "$(m "${t[mount]}")" "$(m "${t[restore]}")")"
printf '%-60s %9.2fs %10s %8s\n' "umount" "$(m "${t[umount]}")" - -
printf '%-60s %9.2fs %9.2fs %7.2fx\n' "cat of a 1 MiB file vs cat of it from the restored image" "$(m "${t[cat]}")" "$(m "${t[refcat]}")" "$(r "$(m "${t[cat]}")" "$(m "${t[refcat]}")")"
