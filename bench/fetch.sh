#!/usr/bin/env bash
# bench/fetch.sh: vbackup backup-fetch against the reference readers, side by
# side on the same pull export in one run, alternated, median of N runs each.
#   full, raw:   vbackup backup-fetch --format raw   vs  nbdcopy EXPORT file.raw
#                (which never flushes), and vs nbdcopy --flush (flushes at the
#                end, as vbackup fsyncs before it renames)
#   full, qcow2: vbackup backup-fetch --format qcow2 vs  qemu-img convert -O qcow2 EXPORT
#                (its default target cache is unsafe: it never flushes), and
#                vs qemu-img convert -t writeback (flushes at the end, as
#                vbackup fsyncs before it renames)
#   the export read and thrown away (nbdcopy EXPORT null:): the floor of any
#                copy, and about what an unflushed copy costs here, as the
#                page cache holds gigabytes of dirty data without writing them
#   incremental with 1 MiB changed: wall time and bytes read
#   peak memory (max RSS) of vbackup, raw and qcow2
# Disk: 4 GiB virtual, 2 GiB of random data (override: SIZE_MB DATA_MB RUNS
# PAUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}
make -s build >/dev/null
vb=$PWD/bin/vbackup
bed=$(mktemp -d /tmp/vbackup-bench.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf /run/vbackup/bench' EXIT
export LIBVIRT_DEFAULT_URI=$(scripts/testbed.sh up "$bed" 2>/dev/null)
scripts/testbed.sh domain "$bed" bench "vda:qcow2:${SIZE_MB}M" >/dev/null
img=$bed/images/bench/vda.qcow2

echo "bench: filling ${DATA_MB} MiB of ${SIZE_MB} MiB with random data..." >&2
virsh -q destroy bench >/dev/null
head -c "$((DATA_MB << 20))" /dev/urandom > "$bed/rand.raw"
truncate -s "${SIZE_MB}M" "$bed/rand.raw"
qemu-img convert -n -f raw -O qcow2 "$bed/rand.raw" "$img"
rm -f "$bed/rand.raw"; chown vbtest "$img"
virsh -q start bench >/dev/null

out=$bed/out; mkdir -p "$out"
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Every run starts from the same state: the previous run's gigabytes written
# back and the page cache dropped (as root), else whichever tool runs after a
# large write pays for its writeback. Then PAUSE seconds (default 0): on a VM
# whose balloon reports free pages to its host, memory freed a few seconds
# ago has gone back to the host, and a tool pays a host fault for every page
# it touches first (2 GiB written into the page cache took 0.5 s at once,
# 2.3-4.8 s after 5 s). With a pause every tool starts from that state.
PAUSE=${PAUSE:-0}
settle() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 > /proc/sys/vm/drop_caches || true; sleep "$PAUSE"; }
timed() { local s e; settle; s=$(now); "$@" >/dev/null 2>&1; e=$(now); echo "$e - $s" | bc; }

"$vb" backup-begin bench --pull --checkpoint base >/dev/null 2>&1
sock=/run/vbackup/bench/nbd.sock uri="nbd+unix:///vda?socket=/run/vbackup/bench/nbd.sock"
declare -a t_vraw t_ncopy t_nflush t_vq t_qconv t_qwb t_null
for i in $(seq "$RUNS"); do
  rm -rf "$out"/*
  t_null+=("$(timed nbdcopy "$uri" null:)")
  t_ncopy+=("$(timed nbdcopy "$uri" "$out/ref.raw")"); rm -f "$out/ref.raw"
  t_nflush+=("$(timed nbdcopy --flush "$uri" "$out/ref.raw")"); rm -f "$out/ref.raw"
  t_vraw+=("$(timed "$vb" backup-fetch bench --to "$out/r$i" --format raw -q)"); rm -rf "$out/r$i"
  t_qconv+=("$(timed qemu-img convert -O qcow2 "$uri" "$out/ref.qcow2")"); rm -f "$out/ref.qcow2"
  t_qwb+=("$(timed qemu-img convert -t writeback -O qcow2 "$uri" "$out/ref.qcow2")"); rm -f "$out/ref.qcow2"
  t_vq+=("$(timed "$vb" backup-fetch bench --to "$out/q$i" --format qcow2 -q)")
done
rss=$( { /usr/bin/time -f %M "$vb" backup-fetch bench --to "$out/rss" --format raw -q; } 2>&1 | tail -1 )
rssq=$( { /usr/bin/time -f %M "$vb" backup-fetch bench --to "$out/rssq" --format qcow2 -q; } 2>&1 | tail -1 )
qemu-img compare -U -f qcow2 -F qcow2 "$img" "$out/q$RUNS/vda.qcow2" >/dev/null && same=identical || same=DIFFERENT
"$vb" backup-end bench >/dev/null

m() { printf '%s\n' "$@" | median; }
echo "runs (s): read only ${t_null[*]} | nbdcopy ${t_ncopy[*]} | nbdcopy --flush ${t_nflush[*]} | vbackup raw ${t_vraw[*]} | qemu-img convert ${t_qconv[*]} | -t writeback ${t_qwb[*]} | vbackup qcow2 ${t_vq[*]}" >&2
vraw=$(m "${t_vraw[@]}") ncopy=$(m "${t_ncopy[@]}") nflush=$(m "${t_nflush[@]}") vq=$(m "${t_vq[@]}") qconv=$(m "${t_qconv[@]}") qwb=$(m "${t_qwb[@]}") tnull=$(m "${t_null[@]}")

# Incremental: 1 MiB changed since 'base'.
scripts/testbed.sh write "$bed" bench vda 0xcd 1G 1M
"$vb" backup-begin bench --pull --incremental base --checkpoint inc >/dev/null 2>&1
s=$(now); line=$("$vb" backup-fetch bench --to "$out/inc" --backing "$out/q$RUNS" | tail -1); e=$(now)
t_inc=$(echo "$e - $s" | bc)
"$vb" backup-end bench >/dev/null

printf '\nvbackup backup-fetch vs reference, %s MiB disk with %s MiB random data, median of %s alternated runs, %ss pause after dropping caches\n' "$SIZE_MB" "$DATA_MB" "$RUNS" "$PAUSE"
printf '%-34s %8s %8s %7s\n' "case" "vbackup" "ref" "ratio"
printf '%-34s %7.2fs %7.2fs %6.2fx\n' "full -> raw   (ref: nbdcopy)" "$vraw" "$ncopy" "$(echo "$vraw / $ncopy" | bc -l)"
printf '%-34s %7.2fs %7.2fs %6.2fx\n' "full -> raw   (ref: nbdcopy --flush)" "$vraw" "$nflush" "$(echo "$vraw / $nflush" | bc -l)"
printf '%-34s %7.2fs %7.2fs %6.2fx\n' "full -> qcow2 (ref: qemu-img convert)" "$vq" "$qconv" "$(echo "$vq / $qconv" | bc -l)"
printf '%-34s %7.2fs %7.2fs %6.2fx\n' "full -> qcow2 (ref: convert -t writeback)" "$vq" "$qwb" "$(echo "$vq / $qwb" | bc -l)"
printf '%-34s %7s %7.2fs\n' "read only (nbdcopy EXPORT null:)" "" "$tnull"
printf 'incremental, 1 MiB changed: %.2fs (%s)\n' "$t_inc" "$(echo "$line" | sed 's/^ *//')"
printf 'peak memory of a full fetch: raw %s MiB, qcow2 %s MiB\n' "$((rss / 1024))" "$((rssq / 1024))"
printf 'qcow2 fetch vs source: %s\n' "$same"
