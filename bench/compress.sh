#!/usr/bin/env bash
# bench/compress.sh: what compression costs and saves on a disk that resembles
# a real one, side by side in one run on one running domain:
#   vbackup backup --level full --compress none | zlib | zstd   (pull mode)
#   virtnbdbackup 2.47 -l full -z   (lz4)  and without -z (its uncompressed reference)
# Each run does every method once, in an order that rotates from run to run,
# each into an empty folder, after sync and drop_caches; every method starts
# from a domain with no checkpoint (virtnbdbackup refuses checkpoints it did
# not make). Reported per method: the space its folder takes (du -sB1), that
# space over the data written to the disk, the median wall time and its ratio
# to vbackup --compress none, and the same until the folder's files are
# fsynced (vbackup fsyncs its images; virtnbdbackup does not). Not timed: each
# vbackup backup is read back by 'vbackup verify' and compared with the
# domain's disk by 'qemu-img compare' (domain suspended); each virtnbdbackup
# backup by 'virtnbdrestore -a verify' (its stream checksums).
#
# The disk: SIZE_MB virtual, its data laid in stretches of CHUNK_MB that
# alternate between the kinds below in proportion, with a hole between each
# two stretches (the rest of the disk, spread evenly):
#   TEXT_MB    text files of this machine, concatenated in path order: man
#              pages and /usr/share/doc (decompressed), headers, Go, Python and
#              Perl sources (read again from the start if they are fewer)
#   BIN_MB     executables and libraries (/usr/bin, /usr/sbin, /usr/libexec,
#              /usr/lib/x86_64-linux-gnu), in path order
#   REPEAT_MB  one 64 KiB block of random bytes, over and over, cluster
#              aligned: repeated across blocks, incompressible within one
#              (only deduplication would gain: none of these methods does)
#   DUP_MB     duplicated files: the first DUP_MB of the text again
#   RANDOM_MB  /dev/urandom: what compressed or encrypted files hold
# Text and binaries are the same from run to run on one machine.
#
# Usage: bench/compress.sh   (as root; installs what is missing with apt-get)
# Environment: RUNS (3), SIZE_MB (4096), CHUNK_MB (16), TEXT_MB (512),
# BIN_MB (512), REPEAT_MB (128), DUP_MB (128), RANDOM_MB (768), PAUSE (0:
# seconds waited after each drop of the page cache, see bench/README.md),
# VNB (/work/shared/anchors/virtnbdbackup-2.47.tar.gz: the release tarball).
# A quick check: SIZE_MB=256 CHUNK_MB=4 TEXT_MB=32 BIN_MB=32 REPEAT_MB=8 DUP_MB=8 RANDOM_MB=48 RUNS=1
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} SIZE_MB=${SIZE_MB:-4096} CHUNK_MB=${CHUNK_MB:-16} PAUSE=${PAUSE:-0}
TEXT_MB=${TEXT_MB:-512} BIN_MB=${BIN_MB:-512} REPEAT_MB=${REPEAT_MB:-128} DUP_MB=${DUP_MB:-128} RANDOM_MB=${RANDOM_MB:-768}
VNB=${VNB:-/work/shared/anchors/virtnbdbackup-2.47.tar.gz}

die() { echo "bench: $*" >&2; exit 1; }
for v in RUNS SIZE_MB CHUNK_MB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
for v in TEXT_MB BIN_MB REPEAT_MB DUP_MB RANDOM_MB PAUSE; do
  [[ ${!v} =~ ^(0|[1-9][0-9]*)$ ]] || die "$v must be 0 or a positive integer, not '${!v}'"
done
DATA_MB=$((TEXT_MB + BIN_MB + REPEAT_MB + DUP_MB + RANDOM_MB))
[ "$DATA_MB" -gt 0 ] || die "no data: TEXT_MB, BIN_MB, REPEAT_MB, DUP_MB and RANDOM_MB are all 0"
[ "$DATA_MB" -le "$SIZE_MB" ] ||
  die "the data (TEXT_MB+BIN_MB+REPEAT_MB+DUP_MB+RANDOM_MB = $DATA_MB MiB) is larger than SIZE_MB ($SIZE_MB)"
[ "$DUP_MB" -le "$TEXT_MB" ] || die "DUP_MB ($DUP_MB) copies the text: it cannot be larger than TEXT_MB ($TEXT_MB)"
[ -f "$VNB" ] || die "VNB: no virtnbdbackup release tarball at '$VNB' (virtnbdbackup-2.47.tar.gz from github.com/abbbi/virtnbdbackup)"
[ "$(id -u)" -eq 0 ] || die "must run as root (the test bed, apt-get, drop_caches)"

# need CMD PACKAGE...: install PACKAGE(s) if CMD is missing; needpy MODULE
# PACKAGE: the same for a module of Debian's Python.
updated=
apt_install() {
  echo "bench: installing $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  # Other sessions of this machine may hold dpkg's lock for a while.
  apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends "$@" >/dev/null
}
need() { command -v "$1" >/dev/null 2>&1 || apt_install "${@:2}"; }
needpy() { /usr/bin/python3 -c "import $1" 2>/dev/null || apt_install "$2"; }
make -s build >/dev/null # installs libvirt, QEMU, bc, ... (scripts/install-deps.sh)
need bc bc
need /usr/bin/time time
need xmllint libxml2-utils
need /usr/bin/python3 python3
# What virtnbdbackup 2.47 imports (/work/shared/anchors/README.md).
needpy libvirt python3-libvirt
needpy nbd python3-libnbd
needpy lz4.frame python3-lz4
needpy tqdm python3-tqdm
needpy lxml python3-lxml
needpy paramiko python3-paramiko
needpy colorlog python3-colorlog
needpy typing_extensions python3-typing-extensions
vb=$PWD/bin/vbackup

# A domain name of our own: vbackup's pull socket lives in /run/vbackup/DOMAIN,
# shared with any other bed of this machine.
dom=vbc-$$
bed=$(mktemp -d /tmp/vbc.XXXXXX)
trap 'scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
uri=$(scripts/testbed.sh up "$bed" 2>/dev/null)
export LIBVIRT_DEFAULT_URI=$uri
work=$bed/bench # root's files: the tool, the disk's sources, the backups
mkdir -p "$work/vnb"
tar -xzf "$VNB" -C "$work/vnb"
vnbdir=("$work"/vnb/*/)
vnbdir=${vnbdir[0]%/}
[ -f "$vnbdir/virtnbdbackup" ] || die "no virtnbdbackup at the top of $VNB"
# vnb TOOL ARGS...: virtnbdbackup's TOOL, run by Debian's Python (not a
# python3 earlier in PATH that cannot see Debian's modules).
vnb() {
  local tool=$1
  shift
  PYTHONPATH=$vnbdir /usr/bin/python3 "$vnbdir/$tool" "$@"
}
vnb_version=$(vnb virtnbdbackup -V 2>&1 | tail -n 1)

scripts/testbed.sh domain "$bed" "$dom" "vda:qcow2:${SIZE_MB}M" >/dev/null
img=$bed/images/$dom/vda.qcow2
virsh -q destroy "$dom" >/dev/null

# --- the disk -------------------------------------------------------------
# The sources of text and binaries: NUL-separated lists, in path order.
# Man pages and /usr/share/doc are mostly gzipped: zcat -f decompresses
# those and passes the others through. grep -I tells text from binary files.
textdirs=() bindirs=()
for d in /usr/share/man /usr/share/doc /usr/include /usr/local/go/src /usr/lib/python3 /usr/lib/python3.11 /usr/share/perl; do
  [ -d "$d" ] && textdirs+=("$d")
done
for d in /usr/bin /usr/sbin /usr/libexec /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && bindirs+=("$d")
done
{
  find "${textdirs[@]}" -type f -name '*.gz' -print0 2>/dev/null
  find "${textdirs[@]}" -type f ! -name '*.gz' ! -name '*.pyc' -size +0 -print0 2>/dev/null | xargs -0 grep -IlZ '' 2>/dev/null || true
} | LC_ALL=C sort -z >"$work/text.list"
find "${bindirs[@]}" -type f -size +0 -print0 2>/dev/null | xargs -0 grep -ILZ '' 2>/dev/null | LC_ALL=C sort -z >"$work/bin.list" || true
[ "$TEXT_MB" -eq 0 ] || [ -s "$work/text.list" ] || die "no text files found in ${textdirs[*]}"
[ "$BIN_MB" -eq 0 ] || [ -s "$work/bin.list" ] || die "no binary files found in ${bindirs[*]}"
head -c 65536 /dev/urandom >"$work/block64k"

# Each kind is one endless stream, read in stretches by dd; the loops that
# feed them are stopped (by their pids) once the disk is laid.
feeders=()
exec 3< <(while :; do xargs -0 zcat -f <"$work/text.list" 2>/dev/null; done)
feeders+=($!)
exec 4< <(while :; do xargs -0 cat <"$work/bin.list" 2>/dev/null; done)
feeders+=($!)
exec 5< <(while :; do cat "$work/block64k"; done)
feeders+=($!)
exec 6< <(while :; do xargs -0 zcat -f <"$work/text.list" 2>/dev/null; done)
feeders+=($!)
exec 7</dev/urandom
kinds=(text bin repeat dup random)
declare -A fd=([text]=3 [bin]=4 [repeat]=5 [dup]=6 [random]=7)
declare -A want=([text]=$TEXT_MB [bin]=$BIN_MB [repeat]=$REPEAT_MB [dup]=$DUP_MB [random]=$RANDOM_MB) left
stretches=0
for k in "${kinds[@]}"; do
  left[$k]=${want[$k]}
  stretches=$((stretches + (want[$k] + CHUNK_MB - 1) / CHUNK_MB))
done
gap=$(((SIZE_MB - DATA_MB) / stretches)) # MiB of hole after each stretch
echo "bench: laying ${DATA_MB} MiB of data on ${SIZE_MB} MiB in $stretches stretches, ${gap} MiB apart..." >&2
raw=$work/disk.raw
truncate -s "${SIZE_MB}M" "$raw"
off=0
for _ in $(seq "$stretches"); do
  # The kind with the most of its share left, so that kinds alternate.
  pick=
  for k in "${kinds[@]}"; do
    [ "${left[$k]}" -gt 0 ] || continue
    if [ -z "$pick" ] || [ $((left[$k] * want[$pick])) -gt $((left[$pick] * want[$k])) ]; then pick=$k; fi
  done
  n=$((left[$pick] < CHUNK_MB ? left[$pick] : CHUNK_MB))
  dd bs=1M count="$n" iflag=fullblock of="$raw" seek="$off" conv=notrunc status=none <&"${fd[$pick]}"
  left[$pick]=$((left[$pick] - n))
  off=$((off + n + gap))
done
kill "${feeders[@]}" 2>/dev/null || true
exec 3<&- 4<&- 5<&- 6<&- 7<&-
qemu-img convert -n -f raw -O qcow2 "$raw" "$img"
rm -f "$raw"
chown vbtest "$img"
virsh -q start "$dom" >/dev/null
image_bytes=$(du -sB1 "$img" | cut -f1)

# --- the runs -------------------------------------------------------------
out=$work/out scratch=$bed/scratch
mkdir -p "$out"
install -d -o vbtest "$scratch" # virtnbdbackup's scratch files, made by QEMU (the bed user)
log=$work/cmd.log
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m() { echo "$1" | tr ' ' '\n' | grep . | median; }
settle() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  sleep "$PAUSE"
}
# timed DIR CMD...: run CMD after settle; T is its wall time, TS the wall time
# until the files in DIR are fsynced too, CPU the processor time (user + system)
# of CMD and the processes it waited for. A failure prints the command and its
# output and stops the bench.
timed() {
  local dir=$1 s e
  shift
  settle
  s=$(now)
  /usr/bin/time -o "$work/cpu" -f '%U %S' "$@" >"$log" 2>&1 ||
    { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  e=$(now)
  find "$dir" -type f -exec sync -- {} +
  T=$(echo "$e - $s" | bc) TS=$(echo "$(now) - $s" | bc)
  CPU=$(tail -n 1 "$work/cpu" | awk '{print $1 + $2}')
}
# clean: delete every checkpoint of the domain, newest first: each method
# starts with no bitmap, and virtnbdbackup finds no checkpoint of vbackup's.
clean() {
  local c
  for c in $(virsh -q checkpoint-list "$dom" --name --topological | tac); do
    virsh -q checkpoint-delete "$dom" "$c" >/dev/null
  done
}
# same POINT: whether vbackup's image equals the domain's disk, read with the
# domain paused (which flushes QEMU's qcow2 metadata to the file).
same() {
  local r=identical
  virsh -q suspend "$dom" >/dev/null
  qemu-img compare -q -U -f qcow2 -F qcow2 "$img" "$1" || r=DIFFERENT
  virsh -q resume "$dom" >/dev/null
  echo "$r"
}

methods=(none zlib zstd vnb vnb_z)
declare -A label=([none]="vbackup --compress none" [zlib]="vbackup --compress zlib" [zstd]="vbackup --compress zstd"
  [vnb]="virtnbdbackup (no -z)" [vnb_z]="virtnbdbackup -z (lz4)")
declare -A t ts cpu size checked
run() {
  local k=$1 d=$out/$1
  rm -rf "$d"
  clean
  case $k in
  none | zlib | zstd)
    timed "$d" "$vb" backup "$dom" --to "$d" --level full --compress "$k" --quiet
    size[$k]=$(du -sB1 "$d" | cut -f1)
    "$vb" verify --from "$d" >"$log" 2>&1 || die "vbackup verify --from $d failed: $(cat "$log")"
    [ "$(same "$(ls -d "$d"/*/vda.qcow2)")" = identical ] || die "the $k backup differs from the domain's disk"
    ;;
  vnb | vnb_z)
    local -a z=()
    [ "$k" = vnb ] || z=(-z)
    timed "$d" /usr/bin/env PYTHONPATH="$vnbdir" /usr/bin/python3 "$vnbdir/virtnbdbackup" -d "$dom" -l full "${z[@]}" -o "$d" -U "$uri" -n --scratchdir "$scratch" -f "$bed/run/vnb.sock"
    size[$k]=$(du -sB1 "$d" | cut -f1)
    vnb virtnbdrestore -a verify -i "$d" -o - -n >"$log" 2>&1 || die "virtnbdrestore -a verify of $d failed: $(cat "$log")"
    ;;
  esac
  t[$k]+="$T " ts[$k]+="$TS " cpu[$k]+="$CPU "
  checked[$k]=$((${checked[$k]:-0} + 1))
  rm -rf "$d"
}
for i in $(seq "$RUNS"); do
  order=()
  for j in $(seq 0 4); do order+=("${methods[$(((i - 1 + j) % 5))]}"); done
  echo "bench: run $i of $RUNS: ${order[*]}" >&2
  for k in "${order[@]}"; do run "$k"; done
done
clean

printf 'runs (s):' >&2
for k in "${methods[@]}"; do printf ' %s' "$k" "$(printf '%.2f,' ${t[$k]})" >&2; done
printf '\ncpu (s):' >&2
for k in "${methods[@]}"; do printf ' %s' "$k" "$(printf '%.2f,' ${cpu[$k]})" >&2; done
echo >&2
data=$((DATA_MB << 20))
r() { echo "scale=3; $1 / $2" | bc | sed 's/^\./0./'; }
printf '\n%s MiB disk, %s MiB of data: text %s, binaries %s, a 64 KiB block repeated %s, duplicated text %s, random %s MiB,\n' \
  "$SIZE_MB" "$DATA_MB" "$TEXT_MB" "$BIN_MB" "$REPEAT_MB" "$DUP_MB" "$RANDOM_MB"
printf 'in %s stretches of %s MiB with %s MiB holes between; the qcow2 disk takes %s MiB. virtnbdbackup %s.\n' \
  "$stretches" "$CHUNK_MB" "$gap" "$((image_bytes >> 20))" "$vnb_version"
printf 'Full backups, median of %s runs in rotating order, page cache dropped before each.\n' "$RUNS"
printf '%-26s %10s %6s %8s %7s %8s %7s %8s %7s\n' method "stored" "/data" "time" "/none" "+fsync" "/none" "cpu" "/none"
for k in "${methods[@]}"; do
  printf '%-26s %6s MiB %6s %7.2fs %6.2fx %7.2fs %6.2fx %7.2fs %6.2fx\n' "${label[$k]}" "$((size[$k] >> 20))" "$(r "${size[$k]}" "$data")" \
    "$(m "${t[$k]}")" "$(r "$(m "${t[$k]}")" "$(m "${t[none]}")")" "$(m "${ts[$k]}")" "$(r "$(m "${ts[$k]}")" "$(m "${ts[none]}")")" \
    "$(m "${cpu[$k]}")" "$(r "$(m "${cpu[$k]}")" "$(m "${cpu[none]}")")"
done
printf 'read back: vbackup verify passed and qemu-img compare said identical (none, zlib, zstd): %s, %s, %s of %s runs;\n' \
  "${checked[none]}" "${checked[zlib]}" "${checked[zstd]}" "$RUNS"
printf 'virtnbdrestore -a verify passed (no -z, -z): %s, %s of %s runs.\n' "${checked[vnb]}" "${checked[vnb_z]}" "$RUNS"
cat <<'EOF'
"stored" is du -sB1 of the backup folder (virtnbdbackup's holds its stream
files, checkpoint and domain XML); "+fsync" times a method until the files of
its folder are fsynced: vbackup fsyncs its images, virtnbdbackup does not.
"cpu" is the user + system time of the tool's own processes (GNU time), not
QEMU's serving the export: on a shared machine it moves less than wall time.
EOF
