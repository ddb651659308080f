#!/bin/sh
# Builds the Debian package from a built binary, with dpkg-deb (Debian's dpkg).
#   scripts/build-deb.sh BINARY VERSION OUTDIR
# e.g. scripts/build-deb.sh bin/presencebridge "$(scripts/version.sh deb)" dist
# Prints the path of the .deb it wrote. DEB_COMPRESS=gzip trades size for speed
# (the tests use it); the default is xz, as Debian's own packages.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 BINARY VERSION OUTDIR" >&2; exit 2; }
bin=$1 version=$2 out=$3
command -v dpkg-deb >/dev/null 2>&1 || {
	echo "$0: dpkg-deb not found; build the DEB on Debian or Ubuntu (package dpkg)" >&2
	exit 1
}
src=$(cd "$(dirname "$0")/.." && pwd)
deb=$src/packaging/deb
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/presencebridge" \
	"$stage/lib/systemd/system" "$stage/usr/share/presencebridge" "$stage/usr/share/presencebridge/grafana" \
	"$stage/usr/share/doc/presencebridge"
install -m 0755 "$bin" "$stage/usr/bin/presencebridge"
# The example with the state in /var/lib (the INI's own folder is read-only to the
# service under ProtectSystem=strict). It ships twice: as the conffile, and as the
# pristine copy postinst compares it with.
sed 's|^StateFile =.*$|StateFile = /var/lib/presencebridge/presencebridge.db|' "$src/Presence.ini.example" \
	>"$stage/etc/presencebridge/Presence.ini"
grep -q '^StateFile = /var/lib/presencebridge/presencebridge.db$' "$stage/etc/presencebridge/Presence.ini"
install -m 0644 "$stage/etc/presencebridge/Presence.ini" "$stage/usr/share/presencebridge/Presence.ini.dist"
chmod 0640 "$stage/etc/presencebridge/Presence.ini"
install -m 0640 "$deb/users.csv" "$stage/etc/presencebridge/users.csv"
install -m 0644 "$deb/presencebridge.service" "$stage/lib/systemd/system/presencebridge.service"
install -m 0644 "$src/README.md" "$stage/usr/share/doc/presencebridge/README.md"
# The Grafana dashboard for the metrics endpoint, to import into Grafana.
install -m 0644 "$src/packaging/grafana/presencebridge-dashboard.json" "$stage/usr/share/presencebridge/grafana/presencebridge-dashboard.json"
install -m 0644 "$src/Presence.ini.example" "$stage/usr/share/doc/presencebridge/Presence.ini.example"
install -m 0644 "$deb/copyright" "$stage/usr/share/doc/presencebridge/copyright"
for s in postinst prerm postrm; do
	install -m 0755 "$deb/$s" "$stage/DEBIAN/$s"
done
printf '/etc/presencebridge/Presence.ini\n/etc/presencebridge/users.csv\n' >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: presencebridge
Version: $version
Architecture: amd64
Maintainer: presencebridge <support@presencebridge.invalid>
Installed-Size: $size
Depends: passwd
Section: net
Priority: optional
Homepage: https://presencebridge.invalid/
Description: Microsoft Teams presence for on-premises phone systems
 presencebridge polls Microsoft Graph for the Teams presence of the users in
 /etc/presencebridge/users.csv, within the tenant's throttling budget and
 through the site's outbound proxy, and publishes each change to the PBX over
 SIP (PUBLISH with a PIDF body) or to a CTI endpoint over HTTP.
 .
 It runs as the systemd service presencebridge under its own account, keeps its
 sign-in in /var/lib/presencebridge across restarts and upgrades, and is
 configured in /etc/presencebridge/Presence.ini; "presencebridge verify" checks
 the configuration, the network path and the permissions.
CONTROL
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
mkdir -p "$out"
file="$out/presencebridge_${version}_amd64.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$stage" "$file" >/dev/null
echo "$file"
