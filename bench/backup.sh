#!/usr/bin/env bash
# bench/backup.sh: vbackup backup/restore against virtnbdbackup/virtnbdrestore,
# the tools admins use today, side by side in one run on one running domain.
# Each run does, for each tool in turn (the order alternates from run to run):
#   full backup          vbackup backup --level full   vs  virtnbdbackup -l full
#   incremental          after CHANGES scattered 1 MiB writes: vbackup backup
#                        --level inc                   vs  virtnbdbackup -l inc
#   restore of the latest point to a qcow2 image:
#                        vbackup restore               vs  virtnbdrestore
# and then checks the restored image against the live disk (not timed). Every
# tool starts from a domain with no checkpoint and an empty output folder.
# Reported: medians of wall time, ratio vbackup/virtnbdbackup (below 1: vbackup
# is faster), and peak RSS (GNU time's max RSS: the largest process of the
# tree the tool waits for, e.g. its qemu-nbd, not their sum).
#
# What each side does is not the same work; the output says so too:
#   - vbackup writes qcow2 images and fsyncs them, then reads the backup back
#     to compute its content checksum (backup) or to check it (restore).
#     virtnbdbackup writes its own stream format (uncompressed here: no -z),
#     does not fsync, and computes no checksum. The "+ fsync" rows add the time
#     to fsync each tool's output files after it returns.
#   - virtnbdbackup and virtnbdrestore sleep 1 s before their first NBD connect.
#   vbackup runs with --json: the "copy alone" rows take the elapsed_ms of its
#   result event (the copy, without start-up and checksum pass).
#
# Usage: bench/backup.sh   (as root; installs what is missing with apt-get)
# Environment: RUNS (3), SIZE_MB (4096: the disk), DATA_MB (2048: random data
# at its start), CHANGES (64: 1 MiB writes before the incremental, spread
# evenly over the disk). A small, quick check: SIZE_MB=256 DATA_MB=128 RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048} CHANGES=${CHANGES:-64}

die() { echo "bench: $*" >&2; exit 1; }
for v in RUNS SIZE_MB DATA_MB CHANGES; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[ "$DATA_MB" -le "$SIZE_MB" ] || die "DATA_MB ($DATA_MB) is larger than SIZE_MB ($SIZE_MB)"
stride=$((SIZE_MB / CHANGES)) # MiB between two changed areas
[ "$stride" -ge 1 ] || die "SIZE_MB ($SIZE_MB) must be at least CHANGES ($CHANGES) MiB"
[ "$(id -u)" -eq 0 ] || die "must run as root (the test bed, apt-get, drop_caches)"

# need CMD PACKAGE...: install PACKAGE(s) if CMD is missing.
updated=
need() {
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "bench: installing $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
make -s build >/dev/null # installs libvirt, QEMU, bc, ... (scripts/install-deps.sh)
need virtnbdbackup virtnbdbackup
need /usr/bin/time time
need bc bc
need qemu-io qemu-utils
vb=$PWD/bin/vbackup

# A domain name of our own: vbackup's pull socket lives in /run/vbackup/DOMAIN,
# shared with any other bed of this machine.
dom=vbb-$$
bed=$(mktemp -d /tmp/vbb.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
uri=$(scripts/testbed.sh up "$bed" 2>/dev/null)
export LIBVIRT_DEFAULT_URI=$uri
# virtnbdbackup takes any qemu+ URI for a remote one and then wants --user and
# --password; the plain form reaches the same socket.
vnb_uri=${uri/#qemu+unix:/qemu:}
scripts/testbed.sh domain "$bed" "$dom" "vda:qcow2:${SIZE_MB}M" >/dev/null
img=$bed/images/$dom/vda.qcow2

echo "bench: filling ${DATA_MB} MiB of ${SIZE_MB} MiB with random data..." >&2
virsh -q destroy "$dom" >/dev/null
head -c "$((DATA_MB << 20))" /dev/urandom >"$bed/rand.raw"
truncate -s "${SIZE_MB}M" "$bed/rand.raw"
qemu-img convert -n -f raw -O qcow2 "$bed/rand.raw" "$img"
rm -f "$bed/rand.raw"
# The areas the runs change are allocated once here, so that every full backup
# copies the same amount of data, the first one included.
io=()
for k in $(seq 0 $((CHANGES - 1))); do io+=(-c "write -P 0xcd $((k * stride))M 1M"); done
qemu-io -f qcow2 "${io[@]}" "$img" >/dev/null
chown vbtest "$img"
virsh -q start "$dom" >/dev/null

out=$bed/out scratch=$bed/scratch
mkdir -p "$out"
install -d -o vbtest "$scratch" # virtnbdbackup's scratch files, made by QEMU (the bed user)
log=$bed/cmd.log
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Every timed command starts from the same state: the previous step's
# gigabytes written back and the page cache dropped (as root), else whichever
# tool runs after a large write pays for its writeback.
settle() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# timed DIR CMD...: run CMD after settle; sets T (wall seconds), TS (wall
# seconds until the files in DIR are fsynced too) and RSS (peak, KiB). A failure
# prints the command and its output and stops the bench.
timed() {
  local dir=$1 s e es
  shift
  settle
  s=$(now)
  if ! /usr/bin/time -o "$bed/rss" -f %M "$@" >"$log" 2>&1; then
    echo "bench: FAILED: $*" >&2
    sed 's/^/  | /' "$log" >&2
    exit 1
  fi
  e=$(now)
  find "$dir" -type f -exec sync -- {} +
  es=$(now)
  T=$(echo "$e - $s" | bc) TS=$(echo "$es - $s" | bc) RSS=$(tail -n 1 "$bed/rss")
}

# clean: delete every checkpoint of the domain, newest first, so that each
# tool's full backup starts with no bitmap (and virtnbdbackup finds no
# "foreign" checkpoint, which it refuses).
clean() {
  local c
  for c in $(virsh -q checkpoint-list "$dom" --name --topological | tac); do
    virsh -q checkpoint-delete "$dom" "$c" >/dev/null
  done
}

# change PATTERN: CHANGES writes of 1 MiB, spread evenly over the disk, through
# the running domain.
change() {
  local k
  for k in $(seq 0 $((CHANGES - 1))); do
    scripts/testbed.sh write "$bed" "$dom" vda "$1" "$((k * stride))M" 1M
  done
}

# same RESTORED: whether the restored image equals the live disk.
same() {
  qemu-img compare -U -f qcow2 -F qcow2 "$img" "$1" >/dev/null 2>&1 && echo identical || echo DIFFERENT
}

declare -A t ts rss size cp
add() { t[$1]+="$T " ts[$1]+="$TS " rss[$1]+="$RSS "; }
# copied KEY: vbackup's own time for the copy alone, without starting up and
# without its checksum pass: elapsed_ms of the last --json result event.
copied() {
  local ms
  ms=$(grep '^{"type":"result"' "$log" | tail -n 1 | sed -n 's/.*"elapsed_ms":\([0-9]*\).*/\1/p')
  [ -n "$ms" ] || die "no elapsed_ms in the --json output of vbackup: $(tail -n 3 "$log")"
  cp[$1]+="$(echo "scale=3; $ms / 1000" | bc) "
}

run_vbackup() {
  local d=$out/vb r=$out/vbr
  clean
  timed "$d" "$vb" backup "$dom" --to "$d" --level full --json && add vb_full && copied vb_full
  size[vb_full]=$(du -sm "$d" | cut -f1)
  change "$1"
  timed "$d" "$vb" backup "$dom" --to "$d" --level inc --json && add vb_inc && copied vb_inc
  size[vb_inc]=$(($(du -sm "$d" | cut -f1) - size[vb_full]))
  timed "$r" "$vb" restore --from "$d" --to "$r" --json && add vb_rest && copied vb_rest
  same_vb=$(same "$r/vda.qcow2")
  rm -rf "$d" "$r"
}

run_vnb() {
  local d=$out/vnb r=$out/vnbr
  local -a common=(-d "$dom" -o "$d" -U "$vnb_uri" -n -S "$scratch" -f "$bed/run/vnb.sock")
  clean
  timed "$d" virtnbdbackup -l full "${common[@]}" && add vnb_full
  size[vnb_full]=$(du -sm "$d" | cut -f1)
  change "$1"
  timed "$d" virtnbdbackup -l inc "${common[@]}" && add vnb_inc
  size[vnb_inc]=$(($(du -sm "$d" | cut -f1) - size[vnb_full]))
  timed "$r" virtnbdrestore -i "$d" -o "$r" -U "$vnb_uri" -n -f "$bed/run/vnbr.sock" -L "$bed/vnbr.log" && add vnb_rest
  same_vnb=$(same "$r/vda.qcow2")
  rm -rf "$d" "$r"
}

for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  # A different byte each time, so that every incremental carries new data.
  p1=$(printf '0x%02x' $(((i * 2) % 256))) p2=$(printf '0x%02x' $(((i * 2 + 1) % 256)))
  if [ $((i % 2)) -eq 1 ]; then
    run_vbackup "$p1"; run_vnb "$p2"
  else
    run_vnb "$p1"; run_vbackup "$p2"
  fi
done
clean

m() { echo "$1" | tr ' ' '\n' | grep . | median; }
printf 'runs (s): ' >&2
for k in vb_full vnb_full vb_inc vnb_inc vb_rest vnb_rest; do printf '%s %s| ' "$k" "${t[$k]}" >&2; done
for k in vb_full vb_inc vb_rest; do printf '%s copy %s| ' "$k" "${cp[$k]}" >&2; done
echo >&2

row() { # CASE VBACKUP VIRTNBDBACKUP
  printf '%-36s %9.2fs %9.2fs %7.2fx\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"
}
mib() { echo $(($(m "$1") / 1024)); }
printf '\nvbackup vs virtnbdbackup %s, %s MiB disk with %s MiB random data, %s x 1 MiB changed for the incremental, median of %s alternated runs\n' \
  "$(virtnbdbackup -V 2>&1 | tail -n 1)" "$SIZE_MB" "$DATA_MB" "$CHANGES" "$RUNS"
printf '%-36s %10s %10s %8s\n' "case" "vbackup" "virtnbdbkp" "ratio"
row "full backup" "$(m "${t[vb_full]}")" "$(m "${t[vnb_full]}")"
row "full backup + fsync of its output" "$(m "${ts[vb_full]}")" "$(m "${ts[vnb_full]}")"
row "  vbackup's copy alone (elapsed_ms)" "$(m "${cp[vb_full]}")" "$(m "${t[vnb_full]}")"
row "incremental, $CHANGES MiB changed" "$(m "${t[vb_inc]}")" "$(m "${t[vnb_inc]}")"
row "incremental + fsync of its output" "$(m "${ts[vb_inc]}")" "$(m "${ts[vnb_inc]}")"
row "  vbackup's copy alone (elapsed_ms)" "$(m "${cp[vb_inc]}")" "$(m "${t[vnb_inc]}")"
row "restore latest -> qcow2" "$(m "${t[vb_rest]}")" "$(m "${t[vnb_rest]}")"
row "restore + fsync of the image" "$(m "${ts[vb_rest]}")" "$(m "${ts[vnb_rest]}")"
row "  vbackup's copy alone (elapsed_ms)" "$(m "${cp[vb_rest]}")" "$(m "${t[vnb_rest]}")"
printf '%-36s %8s MiB %6s MiB\n' "peak RSS, full backup" "$(mib "${rss[vb_full]}")" "$(mib "${rss[vnb_full]}")"
printf '%-36s %8s MiB %6s MiB\n' "peak RSS, incremental" "$(mib "${rss[vb_inc]}")" "$(mib "${rss[vnb_inc]}")"
printf '%-36s %8s MiB %6s MiB\n' "peak RSS, restore" "$(mib "${rss[vb_rest]}")" "$(mib "${rss[vnb_rest]}")"
printf '%-36s %8s MiB %6s MiB\n' "space taken, full (last run)" "${size[vb_full]}" "${size[vnb_full]}"
printf '%-36s %8s MiB %6s MiB\n' "space taken, incremental (last run)" "${size[vb_inc]}" "${size[vnb_inc]}"
printf 'restored image vs live disk (last run): vbackup %s, virtnbdrestore %s\n' "$same_vb" "$same_vnb"
cat <<'EOF'
Not the same work: vbackup writes qcow2 and fsyncs it, then reads the backup
back to checksum it (backup) or to check it against the manifest (restore);
virtnbdbackup writes its own stream format (uncompressed), does not fsync and
computes no checksum; both of virtnbd* sleep 1 s before their first NBD connect.
The "+ fsync" rows time each tool until its output files are fsynced. The
"copy alone" rows put vbackup's own time for the copy (the elapsed_ms of its
--json result: no start-up, no checksum pass) against virtnbd*'s whole run.
EOF
