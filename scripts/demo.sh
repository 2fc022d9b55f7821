#!/usr/bin/env bash
# make demo: a throwaway libvirtd + QEMU domain backed up for real by
# vbackup: a full backup, a guest write, an incremental backup, verify,
# restore, and the proof that the restored disks equal the domain's; a
# third backup and a prune that merges the oldest away; a backup of the
# domain shut off. Then a damaged backup, and verify naming it; one file
# got back with cat from a backup of a disk holding an ext4; last, an
# instant restore of the older point running at once, and its --finish.
# Everything lives in one temporary folder, removed at the end.
set -euo pipefail
vbackup=$(realpath "${1:-bin/vbackup}")
here=$(dirname "$(realpath "$0")")
bed=$(mktemp -d /tmp/vbackup-demo.XXXXXX)
trap '"$here/testbed.sh" down "$bed" >/dev/null 2>&1 || true; rm -rf /run/vbackup/demo /run/vbackup/web' EXIT

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
show() { for a; do case $a in *[[:space:]]*) printf "'%s' " "$a" ;; *) printf '%s ' "$a" ;; esac; done; }
run() { bold "\$ $(show "$@")"; "$@"; }
vb() { run vbackup "$@"; }
vbackup() { "$vbackup" "$@"; }

echo "Starting a throwaway libvirtd + QEMU in $bed ..."
LIBVIRT_DEFAULT_URI=$("$here/testbed.sh" up "$bed" 2>/dev/null)
export LIBVIRT_DEFAULT_URI
"$here/testbed.sh" domain "$bed" demo vda:qcow2:2G vdb:raw:512M >/dev/null
vda=$bed/images/demo/vda.qcow2 vdb=$bed/images/demo/vdb.raw
out=$bed/backups restored=$bed/restored
"$here/testbed.sh" write "$bed" demo vda 0x11 0 1G
"$here/testbed.sh" write "$bed" demo vdb 0x22 1M 256M
echo "Domain 'demo' runs with a qcow2 disk (vda, 1 GiB written) and a raw one (vdb, 256 MiB written)."

bold "# 1. The first backup: full, with per-disk progress"
vb backup demo --to "$out"

bold "# 2. The guest writes 1 MiB at offset 8 MiB of vda"
"$here/testbed.sh" write "$bed" demo vda 0xcd 8M 1M

bold "# 3. The next backup: incremental; vdb is raw, so it is copied whole"
vb backup demo --to "$out"
vb backups "$out"
first=$(ls "$out" | head -n1)
run qemu-img info -U "$out/$(ls "$out" | tail -n1)/vda.qcow2"

bold "# 4. verify reads every backup back through its chain and checks its manifest"
vb verify --from "$out"

bold "# 5. restore writes each disk at the latest point as one image, checked against the manifest"
vb restore --from "$out" --to "$restored/latest"
bold "# Proof: the restored disks equal the domain's (paused, so that nothing moves)"
run virsh suspend demo
run qemu-img compare -U -f qcow2 -F qcow2 "$vda" "$restored/latest/vda.qcow2"
run qemu-img compare -U -f raw -F qcow2 "$vdb" "$restored/latest/vdb.qcow2"
run virsh resume demo
bold "# ... and the first point differs from the latest exactly where the guest wrote"
vb restore --from "$out" --at "$first" --to "$restored/first" --disk vda --quiet
run qemu-img compare "$restored/first/vda.qcow2" "$restored/latest/vda.qcow2" || echo "(exit status $?: the write at 8 MiB)"

bold "# 6. A third backup, then prune keeps the last two: the full takes the next backup's data and its place"
"$here/testbed.sh" write "$bed" demo vda 0xee 64M 1M
vb backup demo --to "$out" --quiet
vb prune --from "$out" --keep-last 2
vb verify --from "$out"

bold "# 7. The domain shut off: the next backup reads its images directly, and is still incremental"
run virsh destroy demo
# A write made while it is off (any QEMU tool updates the images' bitmaps).
qemu-io -f qcow2 -c "write -P 0xab 128M 1M" "$vda" >/dev/null
vb backup demo --to "$out"
run virsh start demo

bold "# 8. One byte of the newest overlay damaged: verify names that backup"
last=$(ls "$out" | tail -n1)
offset=$(qemu-img map -U --output=json "$out/$last/vda.qcow2" | grep -m1 '"depth": 0, .*"data": true' | sed 's/.*"offset": \([0-9]*\).*/\1/')
printf '\x00' | dd of="$out/$last/vda.qcow2" bs=1 seek="$offset" conv=notrunc status=none
vb verify --from "$out" || echo "(exit status $?)"

bold "# In virsh's language: only the newest backup's checkpoint stays in libvirt"
vb checkpoint-list demo --tree

bold "# 9. One file back without a restore: a domain whose disk holds an ext4, backed up, then read in place"
mkdir -p "$bed/site/etc" && printf 'server {\n  listen 80;\n}\n' >"$bed/site/etc/nginx.conf"
truncate -s 256M "$bed/site.raw" && mke2fs -q -F -t ext4 -L site -d "$bed/site" "$bed/site.raw"
install -d -o vbtest "$bed/images/web" && qemu-img convert -O qcow2 "$bed/site.raw" "$bed/images/web/vda.qcow2" && chown vbtest "$bed/images/web/vda.qcow2"
"$here/testbed.sh" domain "$bed" web vda:qcow2:256M >/dev/null
vbackup backup web --to "$bed/web" --quiet
vb ls --from "$bed/web" /etc
vb cat --from "$bed/web" /etc/nginx.conf

bold "# 10. Instant recovery: a new domain runs at once on thin overlays of the older (undamaged) point"
older=$(ls "$out" | head -n1)
vb restore --from "$out" --at "$older" --instant --to "$bed/instant" --define demo-now --start
run virsh domstate demo-now
vb backups "$out"
bold "# ... and --finish copies the backup's data into its own images while it runs"
vb restore --finish demo-now
run virsh domblklist demo-now
echo
echo "Done; the throwaway daemon, domain and backups are removed."
