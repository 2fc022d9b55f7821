#!/usr/bin/env bash
# bench/many.sh: 'vbackup backup --all --parallel 2' of DOMAINS domains
# against the same domains backed up one by one ('vbackup backup DOM' per
# domain, one process each, as a shell loop would), side by side in one
# run, alternated, each run a full backup into a fresh folder after sync
# and drop_caches. Each domain has one SIZE_MB disk holding DATA_MB of
# random data. Reported: medians and the ratio parallel / one by one; with
# 2 vCPUs (the CPU-bound part is the copy and its checksum) and one disk
# expect something between 0.5 (perfect overlap) and 1.
#
# Usage: bench/many.sh   (as root)
# Environment: RUNS (3), DOMAINS (4), SIZE_MB (1024), DATA_MB (512).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} DOMAINS=${DOMAINS:-4} SIZE_MB=${SIZE_MB:-1024} DATA_MB=${DATA_MB:-512}

die() { echo "bench: $*" >&2; exit 1; }
for v in RUNS DOMAINS SIZE_MB DATA_MB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[ "$DATA_MB" -le "$SIZE_MB" ] || die "DATA_MB ($DATA_MB) is larger than SIZE_MB ($SIZE_MB)"
[ "$(id -u)" -eq 0 ] || die "must run as root (the test bed, drop_caches)"
make -s build >/dev/null # installs libvirt, QEMU, bc, ... (scripts/install-deps.sh)
command -v bc >/dev/null || die "bc is missing (apt-get install bc)"
vb=$PWD/bin/vbackup

bed=$(mktemp -d /tmp/vbm.XXXXXX)
doms=()
for i in $(seq "$DOMAINS"); do doms+=("vbm$i-$$"); done
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; for d in "${doms[@]}"; do rm -rf "/run/vbackup/$d"; done' EXIT
export LIBVIRT_DEFAULT_URI=$(scripts/testbed.sh up "$bed" 2>/dev/null)
echo "bench: $DOMAINS domains, ${DATA_MB} MiB of random data on a ${SIZE_MB} MiB disk each..." >&2
head -c "$((DATA_MB << 20))" /dev/urandom >"$bed/rand.raw"
truncate -s "${SIZE_MB}M" "$bed/rand.raw"
for d in "${doms[@]}"; do
  scripts/testbed.sh domain "$bed" "$d" "vda:qcow2:${SIZE_MB}M" >/dev/null
  img=$bed/images/$d/vda.qcow2
  virsh -q destroy "$d" >/dev/null
  qemu-img convert -n -f raw -O qcow2 "$bed/rand.raw" "$img"
  chown vbtest "$img"
  virsh -q start "$d" >/dev/null
done
rm -f "$bed/rand.raw"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m() { echo "$1" | tr ' ' '\n' | grep . | median; }
settle() { sync; echo 3 >/proc/sys/vm/drop_caches; }
log=$bed/cmd.log
# timed NAME CMD...: appends CMD's wall time, after settle, to t[NAME].
declare -A t
timed() {
  local name=$1 s
  shift
  settle
  s=$(now)
  "$@" >"$log" 2>&1 || { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  t[$name]+=" $(echo "$(now) - $s" | bc)"
}
one_by_one() {
  local d
  for d in "${doms[@]}"; do "$vb" backup "$d" --to "$1/$d" --quiet || return 1; done
}
for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  rm -rf "$bed/par" "$bed/seq"
  # Alternated: which goes first changes from run to run.
  if [ $((i % 2)) -eq 1 ]; then
    timed par "$vb" backup --all --parallel 2 --to "$bed/par" --quiet
    timed seq one_by_one "$bed/seq"
  else
    timed seq one_by_one "$bed/seq"
    timed par "$vb" backup --all --parallel 2 --to "$bed/par" --quiet
  fi
  [ "$(ls "$bed/par" | wc -l)" -eq "$DOMAINS" ] || die "the parallel run made $(ls "$bed/par" | wc -l) folders, not $DOMAINS"
done
par=$(m "${t[par]}") seq=$(m "${t[seq]}")
printf '%-44s %8.2f s   (runs:%s)\n' "backup --all --parallel 2 ($DOMAINS domains)" "$par" "${t[par]}"
printf '%-44s %8.2f s   (runs:%s)\n' "one by one ($DOMAINS processes)" "$seq" "${t[seq]}"
printf 'ratio parallel / one by one: %.2f   (load average: %s)\n' "$(echo "$par / $seq" | bc -l)" "$(cut -d' ' -f1-3 /proc/loadavg)"
