#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) base image of the VM test tier, with debootstrap, no loop mount
# and no bootloader:
#
#   vm/build-image.sh OUTDIR
#
# writes into OUTDIR:
#   rootfs.qcow2          the root filesystem (ext4 on the whole disk: root=/dev/vda), never booted
#                         itself: every run boots a copy-on-write overlay of it
#   vmlinuz, initrd.img   the guest kernel and initramfs, booted directly by qemu (-kernel/-initrd)
#   id_ed25519[.pub]      the key root logs in with (made for this image only)
#   manifest.txt          what went in (packages and versions)
#
# Callers normally go through vm/qemu.py (ensure_image), which keys a cache directory by a hash of
# this script and vm/guest/, builds once and reuses the image. Needs root (debootstrap), about
# 2 GB of free disk and the Debian mirror that apt on this host uses.
#
# The guest has no network but qemu's user net to the host's loopback, so everything the packaged
# agent needs at install time is preinstalled here: extend GUEST_PACKAGES when the .deb's Depends
# grow (tests/system says which one is missing when `apt install ./fondation-agent_*.deb` fails).
set -euo pipefail

OUT=${1:?usage: build-image.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=bookworm
DISK_SIZE=${FONDATION_VM_DISK_SIZE:-8G}

GUEST_PACKAGES=(
    # boot, init, the user manager with cgroup delegation, logind for linger
    linux-image-amd64 initramfs-tools kmod udev systemd systemd-sysv libpam-systemd libnss-systemd
    dbus dbus-user-session
    # access and administration
    openssh-server sudo adduser passwd procps psmisc iproute2 less netbase ca-certificates curl
    util-linux e2fsprogs logrotate
    # what the agent, its .deb and the CLIs need at run time
    python3 python3-venv git nodejs nftables
    # what a hostile job tries to use to outlive its end (tests/system/test_35_hostile.py)
    cron at
    # what Ansible needs on a managed host (the Molecule scenario reuses this image)
    python3-apt
    # the Prometheus that Molecule's verify checks the role's targets and alert rules with (disabled
    # below: it runs only where a test starts it)
    prometheus
)

log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ $(id -u) == 0 ]] || { log "needs root (debootstrap, file ownership in the image)"; exit 1; }

# The mirror apt already uses on this host (deb822 or one-line sources), else Debian's own.
mirror() {
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    [[ -n $uri ]] || uri=$(grep -hsE '^deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -E '/debian/?$' | head -n1 || true)
    echo "${FONDATION_VM_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "${OUT%/}/.build.XXXXXX")
ROOT=$WORK/root
cleanup() {
    # debootstrap mounts proc/sys inside the target; never leave them mounted.
    for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts" "$ROOT/dev"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

MIRROR=$(mirror)
include=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
log "debootstrap $SUITE from $MIRROR (minbase + ${#GUEST_PACKAGES[@]} packages)"
started=$SECONDS
debootstrap --variant=minbase --include="$include" --components=main "$SUITE" "$ROOT" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 40 "$WORK/debootstrap.log" >&2; exit 1; }
log "debootstrap done in $((SECONDS - started)) s"

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# Files from vm/guest/ (networking, sshd, serial autologin, journald, sysctl…) go in as they are.
cp -a "$HERE/guest/." "$ROOT/"
chown -R root:root "$ROOT/etc/systemd" "$ROOT/etc/ssh/sshd_config.d"

echo fondation-vm >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfondation-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
printf '/dev/vda\t/\text4\terrors=remount-ro,noatime\t0\t1\n' >"$ROOT/etc/fstab"
echo "deb $MIRROR $SUITE main" >"$ROOT/etc/apt/sources.list"
: >"$ROOT/etc/machine-id"   # a fresh one at first boot of every overlay
rm -f "$ROOT/var/lib/dbus/machine-id"
# No DNS: the guest reaches nothing but 10.0.2.2 (the host's loopback) anyway.
: >"$ROOT/etc/resolv.conf"

ssh-keygen -q -t ed25519 -N '' -C "fondation-vm-test" -f "$WORK/id_ed25519"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$WORK/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
in_root passwd -l root >/dev/null

in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
in_root systemctl disable systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# Nothing periodic in the background of a test (apt has no network anyway).
in_root systemctl disable prometheus.service >/dev/null 2>&1
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true

# The initramfs must find /dev/vda on its own: virtio drivers in, no resume device to wait for.
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >>"$ROOT/etc/initramfs-tools/modules"
echo 'RESUME=none' >"$ROOT/etc/initramfs-tools/conf.d/resume"
in_root update-initramfs -u -k all >"$WORK/initramfs.log" 2>&1 || { cat "$WORK/initramfs.log" >&2; exit 1; }

in_root dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/manifest.txt"
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/tmp/* 2>/dev/null || true
# debootstrap mounted these inside the target; they must not end up in the image.
for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts"; do mountpoint -q "$m" && umount -l "$m" || true; done

cp -L "$ROOT/vmlinuz" "$WORK/vmlinuz"
cp -L "$ROOT/initrd.img" "$WORK/initrd.img"

log "making the ext4 filesystem ($DISK_SIZE) from the tree (mkfs.ext4 -d, no loop mount)"
truncate -s "$DISK_SIZE" "$WORK/rootfs.raw"
mkfs.ext4 -q -F -L fondation-root -E root_owner=0:0 -d "$ROOT" "$WORK/rootfs.raw"
qemu-img convert -O qcow2 "$WORK/rootfs.raw" "$WORK/rootfs.qcow2"
rm -f "$WORK/rootfs.raw"

for f in rootfs.qcow2 vmlinuz initrd.img id_ed25519 id_ed25519.pub manifest.txt; do
    mv "$WORK/$f" "$OUT/$f"
done
log "image ready in $OUT ($(du -sh "$OUT/rootfs.qcow2" | cut -f1) qcow2) after $((SECONDS - started)) s"
