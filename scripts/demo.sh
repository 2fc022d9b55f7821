#!/usr/bin/env bash
# make demo: a throwaway libvirtd + QEMU domain, and vbackup's checkpoint
# commands run on it for real: create, list as a table and a tree, inspect
# the changed bytes a checkpoint tracks, delete. Everything lives in one
# temporary folder, removed at the end.
set -euo pipefail
vbackup=$(realpath "${1:-bin/vbackup}")
here=$(dirname "$(realpath "$0")")
bed=$(mktemp -d /tmp/vbackup-demo.XXXXXX)
trap '"$here/testbed.sh" down "$bed" >/dev/null 2>&1 || true' EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "vbackup $(printf '%q ' "$@")"; "$vbackup" "$@"; }

echo "Starting a throwaway libvirtd + QEMU in $bed ..."
export LIBVIRT_DEFAULT_URI=$("$here/testbed.sh" up "$bed")
"$here/testbed.sh" domain "$bed" demo vda:qcow2:256M vdb:raw:64M >/dev/null
echo "Domain 'demo' runs with a qcow2 disk vda and a raw disk vdb (LIBVIRT_DEFAULT_URI=$LIBVIRT_DEFAULT_URI)."

run checkpoint-create-as demo monday --description "first checkpoint"
step "(the guest writes 1 MiB at offset 8 MiB of vda)"
"$here/testbed.sh" write "$bed" demo vda 0xcd 8M 1M
run checkpoint-create-as demo tuesday
run checkpoint-create-as demo wednesday --diskspec vda
run checkpoint-list demo --parent
run checkpoint-list demo --tree
run checkpoint-dumpxml demo monday --no-domain --size
run checkpoint-info demo tuesday
step "vbackup checkpoint-create-as demo thursday --diskspec vdb   (a raw disk cannot carry a bitmap)"
"$vbackup" checkpoint-create-as demo thursday --diskspec vdb || echo "(exit status $?)"
run checkpoint-delete demo tuesday
run checkpoint-list demo --tree
echo "Done; the throwaway daemon and domain are removed."
