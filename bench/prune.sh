#!/usr/bin/env bash
# bench/prune.sh: what keeping backups for years costs, on a rolling chain.
# A domain with SIZE_MB of disk holding DATA_MB of random data is backed up
# CHAIN times, with CHANGE_MB of new data written before each incremental.
# Then, side by side in one run, each measured RUNS times (alternated where
# two things are compared) after sync and drop_caches:
#   prune of the oldest backup (the daily steady state of --keep-daily N)
#       against copying the merged overlay's bytes (cp + fsync of its file),
#       each with its program's files warm and the data cold (timed_warm);
#   restore of the newest point of the CHAIN-long chain
#       against restore of a single full backup of the same disk;
#   verify of the whole folder: bytes read from storage against bytes stored.
# Reported: medians and ratios. The issue's targets: prune at most 2x the
# copy, restore at most 1.2x the single full, verify at most 1.2x stored.
#
# Usage: bench/prune.sh   (as root)
# Environment: RUNS (3), SIZE_MB (4096), DATA_MB (2048), CHANGE_MB (64),
# CHAIN (30). A quick check: SIZE_MB=512 DATA_MB=256 CHANGE_MB=16 CHAIN=5 RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048} CHANGE_MB=${CHANGE_MB:-64} CHAIN=${CHAIN:-30}

. bench/lib.sh
positive RUNS SIZE_MB DATA_MB CHANGE_MB CHAIN
[ "$CHANGE_MB" -le "$DATA_MB" ] || die "CHANGE_MB ($CHANGE_MB) is larger than DATA_MB ($DATA_MB)"
[ "$CHAIN" -ge 2 ] || die "CHAIN must be 2 or more"
prepare

dom=vbp-$$
bed=$(mktemp -d /tmp/vbp.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
random_domain "$bed" "$dom" "$SIZE_MB" "$DATA_MB"

log=$bed/cmd.log
# timed_warm CMD...: timed, with the programs' own files read back once
# after the cache drop, the data left cold. The prune is compared with the
# copy for the data each moves; loading vbackup (its binary and the ~60
# libraries libvirt brings) from a cold cache costs some 50 ms more than
# loading cp, which the start line below measures apart.
timed_warm() {
  local s
  settle
  "$vb" --version >/dev/null
  cp --version >/dev/null
  sync --version >/dev/null
  s=$(now)
  "$@" >"$log" 2>&1 || { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  T=$(echo "$(now) - $s" | bc)
}
# timed CMD...: T is its wall time, after settle.
n=0
# change: CHANGE_MB of new data, at a new place of the data each time.
change() {
  n=$((n + 1))
  local off=$(((n * CHANGE_MB) % (DATA_MB - CHANGE_MB + 1)))
  scripts/testbed.sh write "$bed" "$dom" vda "$(printf '0x%02x' $((n % 256)))" "${off}M" "${CHANGE_MB}M"
}

out=$bed/chain single=$bed/single
echo "bench: $CHAIN backups..." >&2
"$vb" backup "$dom" --to "$out" --quiet
for _ in $(seq $((CHAIN - 1))); do change; "$vb" backup "$dom" --to "$out" --quiet; done

declare -A t
for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  rm -rf "$bed/r1" "$bed/r2" "$single"
  change
  "$vb" backup "$dom" --to "$out" --quiet
  # A single full of the disk as the chain's newest point holds it.
  "$vb" backup "$dom" --to "$single" --level full --quiet
  if [ $((i % 2)) -eq 1 ]; then
    timed "$vb" restore --from "$out" --to "$bed/r1" --quiet; t[chain]+="$T "
    timed "$vb" restore --from "$single" --to "$bed/r2" --quiet; t[single]+="$T "
  else
    timed "$vb" restore --from "$single" --to "$bed/r2" --quiet; t[single]+="$T "
    timed "$vb" restore --from "$out" --to "$bed/r1" --quiet; t[chain]+="$T "
  fi
  qemu-img compare -q "$bed/r1/vda.qcow2" "$bed/r2/vda.qcow2" || die "the chain's newest point and the single full differ"
  rm -rf "$bed/r1" "$bed/r2"

  # Prune the chain back to CHAIN: the oldest full takes the next
  # backup's overlay. The copy it is compared with is that overlay's file,
  # copied and fsynced.
  second=$(ls "$out" | sed -n 2p)
  overlay=$out/$second/vda.qcow2
  merged=$(qemu-img map -U --output=json "$overlay" | awk -F'"length": ' '/"depth": 0,.*"data": true/ {split($2,a,","); s+=a[1]} END {print s}')
  copy() { cp --sparse=always "$overlay" "$bed/copy" && sync "$bed/copy"; }
  prune() {
    timed_warm "$vb" prune --from "$out" --keep-last "$CHAIN"
    t[prune]+="$T "
    grep -q "Removed 1 of $((CHAIN + 1)) backups" "$log" || die "prune did not remove one backup: $(cat "$log")"
  }
  if [ $((i % 2)) -eq 1 ]; then
    timed_warm copy; t[copy]+="$T "; rm -f "$bed/copy"
    prune
  else
    prune
    # The overlay is gone: copy a file of the same size instead.
    head -c "$merged" /dev/urandom >"$bed/same" && overlay=$bed/same
    timed_warm copy; t[copy]+="$T "; rm -f "$bed/copy" "$bed/same"
  fi
done

# vbackup's own start, from a cold cache and a warm one.
for _ in $(seq "$RUNS"); do
  timed "$vb" --version; t[cold]+="$T "
  s=$(now); "$vb" --version >/dev/null; t[warm]+="$(echo "$(now) - $s" | bc) "
done

# verify: what the process tree read from storage (read_bytes of the shell
# that reaped it), against what the folder stores.
settle
read_bytes=$(sh -c "'$vb' verify --from '$out' >/dev/null 2>&1; grep '^read_bytes' /proc/\$\$/io" | awk '{print $2}')
stored=$(du -sB1 "$out" | cut -f1)
"$vb" verify --from "$out" --at all >/dev/null 2>&1 || die "verify failed"

echo "runs (s): prune ${t[prune]}| copy ${t[copy]}| restore chain ${t[chain]}| restore single ${t[single]}| start cold ${t[cold]}| warm ${t[warm]}" >&2
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf '%-52s %10s %10s %8s\n' "case ($CHAIN backups, ${CHANGE_MB} MiB changed each)" vbackup reference ratio
printf '%-52s %9ss %9ss %7sx\n' "prune of the oldest vs cp + fsync of the overlay" "$(m "${t[prune]}")" "$(m "${t[copy]}")" "$(r "$(m "${t[prune]}")" "$(m "${t[copy]}")")"
printf '%-52s %9ss %9ss %7sx\n' "restore of the newest vs restore of a single full" "$(m "${t[chain]}")" "$(m "${t[single]}")" "$(r "$(m "${t[chain]}")" "$(m "${t[single]}")")"
printf '%-52s %9ss %9ss %7sx\n' "vbackup --version, cold cache vs warm (not a target)" "$(m "${t[cold]}")" "$(m "${t[warm]}")" "$(r "$(m "${t[cold]}")" "$(m "${t[warm]}")")"
printf '%-52s %9sM %9sM %7sx\n' "verify of the folder: bytes read vs stored" "$((read_bytes >> 20))" "$((stored >> 20))" "$(r "$read_bytes" "$stored")"
