#!/usr/bin/env bash
# Installs the Debian packages vbackup builds and tests against, only when one
# is missing, so a second run costs nothing. Needs root (or sudo) to install.
set -euo pipefail

packages=(
  pkg-config libvirt-dev                                # cgo bindings
  libvirt-daemon libvirt-daemon-driver-qemu             # libvirtd, virtlogd
  qemu-system-x86 qemu-utils                            # QEMU, qemu-img, qemu-nbd
  libvirt-clients libxml2-utils                         # virsh, virt-xml-validate, RNG schemas
  libnbd-bin nbdkit                                     # nbdinfo, nbdcopy; a reference NBD server
  util-linux                                            # runuser, setsid, script
  openssl                                               # the test bed's backup TLS certificates
  bash-completion zsh fish                              # the shells whose completion the tests drive
  bc                                                    # bench/ arithmetic
  qemu-system-common                                    # qemu-storage-daemon: mount and serve
  xfsprogs dosfstools mtools fdisk fusefat              # mount's tests: mkfs.xfs, mkfs.vfat, mcopy, sfdisk; vfat where the kernel has none
  ovmf                                                  # UEFI firmware: the nvram tests of restore
  swtpm swtpm-tools                                     # an emulated TPM: the TPM-state tests of restore
  linux-image-amd64 busybox-static qemu-guest-agent cpio e2fsprogs # the booted test guest (scripts/guest.sh)
  systemd                                               # systemd-analyze verify of contrib/systemd/
  openssh-server openssh-client iproute2                # the remote test host (scripts/remotehost.sh): sshd, ssh, ip netns
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: missing ${missing[*]}; run as root or install them" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
