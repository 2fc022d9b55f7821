#!/usr/bin/env bash
# bench/full.sh: a full backup against the read limit. Side by side in one
# run, RUNS times each, alternated, after sync and drop_caches:
#   vbackup backup DOMAIN --to NEWDIR --level full (the whole command: the
#       job, the copy into qcow2, the checksum, the manifest, every fsync);
#   nbdcopy of the same pull export to a raw file, flushed (--flush), with
#       the job begun and ended by virsh outside the time.
# Reported: medians and the ratio. The issue's target: at most 1.3x.
#
# Usage: bench/full.sh   (as root)
# Environment: RUNS (5), SIZE_MB (4096), DATA_MB (2048 of random data).
# A quick check: SIZE_MB=512 DATA_MB=256 RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5} SIZE_MB=${SIZE_MB:-4096} DATA_MB=${DATA_MB:-2048}

. bench/lib.sh
positive RUNS SIZE_MB DATA_MB
prepare

dom=vbf-$$
bed=$(mktemp -d /tmp/vbf.XXXXXX)
trap 'virsh -q domjobabort "$dom" >/dev/null 2>&1 || true; scripts/testbed.sh down "$bed" >/dev/null 2>&1 || true; rm -rf "/run/vbackup/$dom"' EXIT
random_domain "$bed" "$dom" "$SIZE_MB" "$DATA_MB"

log=$bed/cmd.log

# The reference: a pull job of the disk begun by virsh, its export read by
# nbdcopy into a raw file and flushed, the job aborted.
sock=$bed/run/nbdcopy.sock
cat >"$bed/pull.xml" <<EOF
<domainbackup mode='pull'>
  <server transport='unix' socket='$sock'/>
  <disks><disk name='vda' backup='yes' type='file'><scratch file='$bed/images/$dom/scratch.qcow2'/></disk></disks>
</domainbackup>
EOF
chown vbtest "$bed/pull.xml"
reference() {
  rm -f "$bed/ref.raw"
  virsh -q backup-begin "$dom" "$bed/pull.xml" >/dev/null
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  timed nbdcopy --flush "nbd+unix:///vda?socket=$sock" "$bed/ref.raw"
  t[nbdcopy]+="$T "
  virsh -q domjobabort "$dom" >/dev/null
  rm -f "$bed/ref.raw"
}
ours() {
  rm -rf "$bed/full"
  timed "$vb" backup "$dom" --to "$bed/full" --level full --quiet
  t[vbackup]+="$T "
  "$vb" verify --from "$bed/full" >/dev/null 2>&1 || die "the backup does not verify"
  # Its checkpoint would pile up: this folder is made anew each run.
  virsh -q checkpoint-delete "$dom" "$(ls "$bed/full")" >/dev/null
  rm -rf "$bed/full"
}

declare -A t
for i in $(seq "$RUNS"); do
  echo "bench: run $i of $RUNS" >&2
  if [ $((i % 2)) -eq 1 ]; then ours; reference; else reference; ours; fi
done

echo "runs (s): vbackup ${t[vbackup]}| nbdcopy ${t[nbdcopy]}" >&2
printf '%-60s %10s %10s %8s\n' "case (${SIZE_MB} MiB disk, ${DATA_MB} MiB of data)" vbackup nbdcopy ratio
printf '%-60s %9ss %9ss %7sx\n' "full backup vs nbdcopy of the export to a raw file" "$(m "${t[vbackup]}")" "$(m "${t[nbdcopy]}")" "$(r "$(m "${t[vbackup]}")" "$(m "${t[nbdcopy]}")")"
