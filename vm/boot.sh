#!/usr/bin/env bash
# Boots the test VM (Debian 12, real systemd, cgroup v2) and prints the ssh command to reach it.
#
#   vm/boot.sh boot [--detach] [--accel auto|kvm|tcg] [--workdir DIR] [--json]
#   vm/boot.sh stop DIR          # powers off a --detach'ed VM
#   vm/boot.sh build             # builds (or finds) the cached base image
#
# The first run builds the base image (~3-10 min, needs root and the Debian mirror) into
# ${FONDATION_VM_CACHE:-/var/cache/fondation-agent-vm}; later runs boot an overlay of it in ~30 s
# (TCG). Installs qemu-system-x86, qemu-utils and debootstrap if they are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi
(($#)) || set -- boot
exec python3 "$here/qemu.py" "$@"
