#!/usr/bin/env bash
# make demo: a throwaway libvirtd + QEMU domain backed up for real by
# vbackup: a full push backup with a checkpoint, a guest write, an
# incremental pull read back over NBD (by nbdcopy, and by vbackup itself
# into an overlay chain), and the proof that each backup holds what the disk
# held. Everything lives in one temporary folder, removed at
# the end.
set -euo pipefail
vbackup=$(realpath "${1:-bin/vbackup}")
here=$(dirname "$(realpath "$0")")
bed=$(mktemp -d /tmp/vbackup-demo.XXXXXX)
trap '"$here/testbed.sh" down "$bed" >/dev/null 2>&1 || true; rm -rf /run/vbackup/demo' EXIT

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
show() { for a; do case $a in *[[:space:]]*) printf "'%s' " "$a" ;; *) printf '%s ' "$a" ;; esac; done; }
run() { bold "\$ $(show "$@")"; "$@"; }
vb() { run vbackup "$@"; }
vbackup() { "$vbackup" "$@"; }

echo "Starting a throwaway libvirtd + QEMU in $bed ..."
export LIBVIRT_DEFAULT_URI=$("$here/testbed.sh" up "$bed" 2>/dev/null)
"$here/testbed.sh" domain "$bed" demo vda:qcow2:2G vdb:qcow2:1G >/dev/null
vda=$bed/images/demo/vda.qcow2 vdb=$bed/images/demo/vdb.qcow2
out=$bed/backups; mkdir -p "$out"; chown vbtest "$out"
"$here/testbed.sh" write "$bed" demo vda 0x11 0 1G
"$here/testbed.sh" write "$bed" demo vdb 0x22 1M 512M
echo "Domain 'demo' runs with two qcow2 disks; the guest has written 1 GiB to vda and 512 MiB to vdb."

bold "# 1. A full push backup, with checkpoint 'monday' created with it; --wait shows each disk's progress"
vb backup-begin demo --target-dir "$out" --checkpoint monday --wait
vb backup-status demo --completed
bold "# Proof: each target equals its disk"
run qemu-img compare -U "$vda" "$out/demo.vda.monday.qcow2"
run qemu-img compare -U "$vdb" "$out/demo.vdb.monday.qcow2"

bold "# 2. The guest writes 1 MiB at offset 8 MiB of vda"
"$here/testbed.sh" write "$bed" demo vda 0xcd 8M 1M

bold "# 3. An incremental pull backup from 'monday', with checkpoint 'tuesday'"
vb backup-begin demo --pull --incremental monday --checkpoint tuesday
sock=/run/vbackup/demo/nbd.sock
vb backup-status demo
bold "# Proof: the export lists exactly the 1 MiB changed since monday, and reads as the disk now"
run nbdinfo --map=qemu:dirty-bitmap:backup-vda "nbd+unix:///vda?socket=$sock"
run nbdinfo --map=qemu:dirty-bitmap:backup-vdb "nbd+unix:///vdb?socket=$sock"
run nbdcopy "nbd+unix:///vda?socket=$sock" "$out/vda-now.raw"
run qemu-img compare -U -f qcow2 -F raw "$vda" "$out/vda-now.raw"

bold "# 4. vbackup reads the exports itself: an overlay per disk on monday's full, holding only the changes"
mkdir -p "$out/monday"   # --backing DIR wants DIR/DISK.qcow2
ln -s "$out/demo.vda.monday.qcow2" "$out/monday/vda.qcow2"
ln -s "$out/demo.vdb.monday.qcow2" "$out/monday/vdb.qcow2"
vb backup-fetch demo --to "$out/tuesday" --backing "$out/monday"
bold "# Proof: each overlay holds only what changed, and the chain reads as the disk now"
run qemu-img info -U "$out/tuesday/vda.qcow2"
run qemu-img compare -U "$vda" "$out/tuesday/vda.qcow2"
run qemu-img compare -U "$vdb" "$out/tuesday/vdb.qcow2"
vb backup-end demo
vb checkpoint-list demo --tree

bold "# What vbackup refuses: overwriting a backup"
vb backup-begin demo --target-dir "$out" --checkpoint monday2 --disk vda,target="$out/demo.vda.monday.qcow2" || echo "(exit status $?)"
echo
echo "Done; the throwaway daemon, domain and backups are removed."
