# bench/lib.sh: what the benches share. Source it after cd to the
# project's root; it uses and sets plain shell variables, as the benches do.

die() { echo "bench: $*" >&2; exit 1; }

# positive VAR...: each variable holds a positive integer.
positive() {
  local v
  for v; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"; done
}

# prepare: root, vbackup built (which installs libvirt, QEMU, bc, ... through
# scripts/install-deps.sh); vb is the binary.
prepare() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (the test bed, drop_caches)"
  make -s build >/dev/null
  command -v bc >/dev/null || die "bc is missing (apt-get install bc)"
  vb=$PWD/bin/vbackup
}

# random_domain BED DOM SIZE_MB DATA_MB: a test bed in BED (LIBVIRT_DEFAULT_URI
# exported) and a running domain DOM whose qcow2 vda (img) of SIZE_MB holds
# DATA_MB of random data.
random_domain() {
  local bed=$1 dom=$2 size=$3 data=$4
  [ "$data" -le "$size" ] || die "DATA_MB ($data) is larger than SIZE_MB ($size)"
  LIBVIRT_DEFAULT_URI=$(scripts/testbed.sh up "$bed" 2>/dev/null)
  export LIBVIRT_DEFAULT_URI
  scripts/testbed.sh domain "$bed" "$dom" "vda:qcow2:${size}M" >/dev/null
  img=$bed/images/$dom/vda.qcow2
  echo "bench: filling ${data} MiB of ${size} MiB with random data..." >&2
  virsh -q destroy "$dom" >/dev/null
  head -c "$((data << 20))" /dev/urandom >"$bed/rand.raw"
  truncate -s "${size}M" "$bed/rand.raw"
  qemu-img convert -n -f raw -O qcow2 "$bed/rand.raw" "$img"
  rm -f "$bed/rand.raw"
  chown vbtest "$img"
  virsh -q start "$dom" >/dev/null
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m() { echo "$1" | tr ' ' '\n' | grep . | median; }
r() { echo "scale=2; $1 / $2" | bc; }
settle() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# timed CMD...: T is its wall time, after settle; its output goes to $log,
# shown if it fails.
timed() {
  local s
  settle
  s=$(now)
  "$@" >"$log" 2>&1 || { echo "bench: FAILED: $*" >&2; sed 's/^/  | /' "$log" >&2; exit 1; }
  T=$(echo "$(now) - $s" | bc)
}
