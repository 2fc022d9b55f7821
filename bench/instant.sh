#!/usr/bin/env bash
# bench/instant.sh: how soon a lost VM runs again. A domain with SIZE_MB of
# disk holding DATA_MB of random data is backed up (full); then, side by
# side in one run, alternated, RUNS times each after sync and drop_caches:
#   restore --instant --define NAME --start   (thin overlays on the backup)
#   restore --define NAME --start             (a full copy, then the same)
# each timed from the command's start until the domain runs. Each instant
# restore's disk, read through its overlay and the backup's chain, is
# compared with the full restore's image (qemu-img compare), which restore
# itself checked against the manifest. Reported: medians and their ratio;
# the issue's target is instant at most 1/10 of the full restore.
#
# Usage: bench/instant.sh   (as root)
# Environment: RUNS (3), SIZE_MB (4096), DATA_MB (2048).
# A quick check: SIZE_MB=512 DATA_MB=256 RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}

. bench/lib.sh
positive RUNS SIZE_MB DATA_MB
prepare

dom=vbi-$$
bed=$(mktemp -d /tmp/vbi.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
random_domain "$bed" "$dom" "$SIZE_MB" "$DATA_MB"

log=$bed/cmd.log
# running CMD...: T is the wall time from CMD's start until domain $name
# runs, after settle.
running() {
  local s
  settle
  s=$(now)
  "$@" >"$log" 2>&1 || { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  until [ "$(virsh -q domstate "$name")" = running ]; do sleep 0.05; done
  T=$(echo "$(now) - $s" | bc)
}
gone() { virsh -q destroy "$1" >/dev/null 2>&1 || true; virsh -q undefine "$1" >/dev/null 2>&1 || true; }

out=$bed/backups
echo "bench: backing up..." >&2
"$vb" backup "$dom" --to "$out" --quiet

declare -A t
instant() {
  name=inst-$i
  running "$vb" restore --from "$out" --instant --to "$bed/inst-$i" --define "$name" --start --quiet
  t[instant]+="$T "
}
full() {
  name=full-$i
  running "$vb" restore --from "$out" --to "$bed/full-$i" --define "$name" --start --quiet
  t[full]+="$T "
}
for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  if [ $((i % 2)) -eq 1 ]; then instant; full; else full; instant; fi
  # The instant restore reads, through its overlay and the backup's chain,
  # what the checked full restore holds.
  qemu-img compare -U -q "$bed/inst-$i/vda.qcow2" "$bed/full-$i/vda.qcow2" ||
    die "the instant restore's disk differs from the point's"
  gone "inst-$i"; gone "full-$i"
  # Its record goes with it; the overlays are gone, so prune would drop it.
  "$vb" restore --finish "inst-$i" --from "$out" --quiet
  rm -rf "$bed/inst-$i" "$bed/full-$i"
done
"$vb" verify --from "$out" >"$log" 2>&1 || die "the backup folder no longer verifies"

ti=$(m "${t[instant]}") tf=$(m "${t[full]}")
echo
echo "instant recovery: ${SIZE_MB} MiB disk holding ${DATA_MB} MiB, medians of $RUNS run(s), until the domain runs"
printf '  %-38s %8.2f s\n' "restore --instant --define --start" "$ti"
printf '  %-38s %8.2f s\n' "restore --define --start (full copy)" "$tf"
printf '  %-38s %8.3f   (target <= 0.100)\n' "instant / full" "$(echo "$ti / $tf" | bc -l)"
echo "  the instant restore's disk reads identical to the checked full restore (qemu-img compare); the folder verifies"
