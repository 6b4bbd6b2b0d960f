#!/bin/bash
# Checks the unit files in systemd/ without installing them: `systemd-analyze verify` (must print
# nothing) and `systemd-analyze security --offline=true` (the table in docs/operations.md).
#
#   packaging/verify-units.sh            verify, then print both security reports
#
# verify wants ExecStart's program to exist: where /usr/bin/fondation-agent is not installed, it
# runs in a private mount namespace (needs root) with a stand-in overlaid on /usr/bin, so the host
# is not touched.
set -euo pipefail
SELF=$(readlink -f "$0")
SOURCE="$(dirname "$SELF")/../systemd"

check() {
    # As the package installs them: the one worker unit under both of its names (build-deb.sh).
    units=$(mktemp -d)
    cp "$SOURCE"/* "$units/"
    cp "$SOURCE/fondation-agent@.service" "$units/fondation-agent.service"
    cd "$units"
    systemd-analyze verify ./fondation-agent.service ./fondation-agent@.service ./fondation-agent.target
    echo "systemd-analyze verify: clean"
    for unit in fondation-agent.service fondation-agent@.service; do
        echo
        echo "### systemd-analyze security --offline=true $unit"
        systemd-analyze security --offline=true --no-pager "./$unit"
    done
    cd / && rm -rf "$units"
}

if [ -x /usr/bin/fondation-agent ]; then
    check
    exit
fi
if [ "${1:-}" != --in-namespace ]; then
    exec unshare --mount "$SELF" --in-namespace
fi
scratch=$(mktemp -d)
trap 'umount /usr/bin 2>/dev/null || true; rm -rf "$scratch"' EXIT
mkdir -p "$scratch/upper" "$scratch/work"
printf '#!/bin/sh\n' > "$scratch/upper/fondation-agent"
chmod 0755 "$scratch/upper/fondation-agent"
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$scratch/upper,workdir=$scratch/work" /usr/bin
check
