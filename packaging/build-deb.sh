#!/bin/bash
# `make deb`: builds dist/fondation-agent_<version>_amd64.deb on Debian 12 with dh-virtualenv, then
# runs lintian on it (errors fail the build; every override is justified in
# packaging/debian/fondation-agent.lintian-overrides).
#
# Needs: apt-get install dh-virtualenv debhelper python3.11-venv python3.11-dev lintian
# and PyPI (pip installs the dependencies into the venv).
#
# The source tree is staged under build/deb/ with packaging/debian/ as debian/ and the unit files of
# systemd/ as debian/fondation-agent.* (so dh_installsystemd writes the maintainer-script snippets for
# them): the one worker unit, systemd/fondation-agent@.service, as both fondation-agent.service and
# the template. debian/changelog is generated from the version make passes (pyproject.toml's).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=${1:?usage: packaging/build-deb.sh VERSION, as make deb passes it from pyproject.toml}
BUILD="$ROOT/build/deb"
SRC="$BUILD/fondation-agent-$VERSION"

missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' dh-virtualenv debhelper python3.11-venv \
    python3.11-dev lintian 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
for tool in dh_virtualenv dpkg-buildpackage lintian; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "make deb: missing build tools ($missing);" \
         "run: apt-get install -y dh-virtualenv debhelper python3.11-venv python3.11-dev lintian" >&2
    exit 2
fi

rm -rf "$BUILD"
mkdir -p "$SRC/examples/course-cli" "$SRC/packaging" "$SRC/monitoring" "$ROOT/dist"
cp pyproject.toml README.md "$SRC/"
tar --exclude=__pycache__ --exclude='*.pyc' -cf - fondation_agent | tar -xf - -C "$SRC"
cp examples/course-cli/cli.mjs examples/course-cli/README.md "$SRC/examples/course-cli/"
# The shipped docs: the one list, debian/fondation-agent.docs (dh_installdocs and make deb read it too).
xargs -a packaging/debian/fondation-agent.docs cp --parents -t "$SRC"
cp -r packaging/files "$SRC/packaging/files"
cp -r monitoring/prometheus monitoring/grafana "$SRC/monitoring/"
cp -r packaging/debian "$SRC/debian"
cp systemd/fondation-agent@.service "$SRC/debian/fondation-agent.service"
cp systemd/fondation-agent@.service "$SRC/debian/fondation-agent@.service"
cp systemd/fondation-agent.target "$SRC/debian/fondation-agent.target"
cp systemd/fondation-agent-gateway.service "$SRC/debian/fondation-agent.fondation-agent-gateway.service"
cp systemd/fondation-jobs-launcher.socket "$SRC/debian/fondation-agent.fondation-jobs-launcher.socket"
# dh_installsystemd enables and starts the socket; the connection template and the slice need neither.
cp systemd/fondation-jobs-launcher@.service systemd/fondation-jobs.slice "$SRC/packaging/files/"

# The changelog's date: SOURCE_DATE_EPOCH, else the last commit's, else now.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    DATE=$(date -R -u -d "@$SOURCE_DATE_EPOCH")
elif DATE=$(git log -1 --format=%cD 2>/dev/null) && [ -n "$DATE" ]; then
    :
else
    DATE=$(date -R)
fi
cat > "$SRC/debian/changelog" <<EOF
fondation-agent ($VERSION) bookworm; urgency=medium

  * Release $VERSION (see the repository's history).

 -- fondation-agent maintainers <fondation-agent@users.noreply.github.com>  $DATE
EOF

(cd "$SRC" && dpkg-buildpackage --build=binary --no-sign)

DEB="fondation-agent_${VERSION}_amd64.deb"
lintian --fail-on error --info "$BUILD/$DEB" | tee "$BUILD/lintian.txt"
cp "$BUILD/$DEB" "$ROOT/dist/$DEB"
echo "make deb: dist/$DEB"
