#!/usr/bin/env bash
# bench/offline.sh: an incremental 'vbackup backup' of a shut-off domain
# (its images read through qemu-nbd, a bitmap added, the checkpoint
# redefined), side by side with the same incremental of the running domain
# (libvirt's pull job), on one 4 GiB qcow2 disk holding 2 GiB of random data,
# after 1 MiB changed. The two alternate from run to run; each run starts
# from a synced, dropped page cache. Reported: medians of wall time (the
# whole command: start-up, copy, checksum pass, commit), and their ratio.
#
# Usage: bench/offline.sh   (as root; installs what is missing with apt-get)
# Environment: RUNS (5), SIZE_MB (4096), DATA_MB (2048).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}
. bench/lib.sh
positive RUNS SIZE_MB DATA_MB
prepare

dom=vbo-$$
bed=$(mktemp -d /tmp/vbo.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
random_domain "$bed" "$dom" "$SIZE_MB" "$DATA_MB"
virsh -q destroy "$dom" >/dev/null # the runs start shut off

log=$bed/cmd.log
# level DIR: the level of DIR's newest backup (it must be incremental).
level() { "$vb" backups "$1" | tail -n 1 | awk '{print $4}'; }

off=$bed/off on=$bed/on
echo "bench: the full backups (not timed)..." >&2
"$vb" backup "$dom" --to "$off" --quiet
virsh -q start "$dom" >/dev/null
"$vb" backup "$dom" --to "$on" --quiet
virsh -q destroy "$dom" >/dev/null

offt=() ont=()
for run in $(seq 1 "$RUNS"); do
  at=$(( (run * 97) % (SIZE_MB - 1) ))
  for side in off on; do
    [ $((run % 2)) -eq 0 ] && side=$([ "$side" = off ] && echo on || echo off)
    if [ "$side" = off ]; then
      qemu-io -f qcow2 -c "write -P $((run % 200 + 1)) ${at}M 1M" "$img" >/dev/null
      timed "$vb" backup "$dom" --to "$off"
      [ "$(level "$off")" = incremental ] || die "the offline backup was not incremental"
      offt+=("$T")
    else
      virsh -q start "$dom" >/dev/null
      scripts/testbed.sh write "$bed" "$dom" vda $((run % 200 + 1)) "${at}M" 1M
      timed "$vb" backup "$dom" --to "$on"
      [ "$(level "$on")" = incremental ] || die "the running backup was not incremental"
      ont+=("$T")
      virsh -q destroy "$dom" >/dev/null
    fi
    echo "bench: run $run, $side: ${T} s" >&2
  done
done
mo=$(printf '%s\n' "${offt[@]}" | median) mn=$(printf '%s\n' "${ont[@]}" | median)
"$vb" verify --from "$off" >/dev/null || die "verify of the offline chain failed"
printf '\nincremental of 1 MiB changed, %s MiB disk (%s MiB data), medians of %s runs:\n' "$SIZE_MB" "$DATA_MB" "$RUNS"
printf '  shut-off domain (qemu-nbd)   %6.2f s\n' "$mo"
printf '  running domain (pull job)    %6.2f s\n' "$mn"
printf '  ratio shut-off/running       %6.2f\n' "$(echo "$mo / $mn" | bc -l)"
