#!/bin/sh
# Builds the Windows installer from a cross-built presencebridge.exe, with Debian's
# wixl and msibuild (packages wixl and msitools):
#   scripts/build-msi.sh presencebridge.exe VERSION OUTDIR
# VERSION is numeric (scripts/version.sh msi). Prints the path of the .msi.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 presencebridge.exe VERSION OUTDIR" >&2; exit 2; }
exe=$1 version=$2 out=$3
for tool in wixl msibuild; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "$0: $tool not found; install Debian's wixl and msitools: sudo apt-get install wixl msitools" >&2
		exit 1
	}
done
src=$(cd "$(dirname "$0")/.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# wixl takes sources relative to the .wxs, so everything goes into one folder.
cp "$exe" "$stage/presencebridge.exe"
cp "$src/packaging/msi/presencebridge.wxs" "$src/README.md" "$src/Presence.ini.example" \
	"$src/packaging/grafana/presencebridge-dashboard.json" "$stage/"
# Notepad-friendly: CRLF line endings in the files an engineer edits.
sed 's/$/\r/' "$src/Presence.ini.example" >"$stage/Presence.ini"
sed 's/$/\r/' "$src/packaging/deb/users.csv" >"$stage/users.csv"
(cd "$stage" && wixl -a x64 -D Version="$version" -o presencebridge.msi presencebridge.wxs)
msi=$stage/presencebridge.msi

# What wixl cannot express.
# Presence.ini and users.csv: Permanent (16) and NeverOverwrite (128), so an
# upgrade or an uninstall keeps the engineer's edits.
msibuild "$msi" -q "UPDATE Component SET Attributes = 400 WHERE Component = 'Config' OR Component = 'Users'"
# The silent-install properties: passed through to the server side, and the
# client secret kept out of MSI logs.
msibuild "$msi" -q "UPDATE Property SET Value = 'WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED;TENANTID;CLIENTID;AUTH;USERNAME;CLIENTSECRET' WHERE Property = 'SecureCustomProperties'"
msibuild "$msi" -q "INSERT INTO Property (Property, Value) VALUES ('MsiHiddenProperties', 'CLIENTSECRET')"
# On a first install with any of them set, the installed exe writes them into
# Presence.ini (config set: in place, the secret encrypted with DPAPI). Type 11282 =
# 18 (an installed exe) + 1024 (deferred) + 2048 (as LocalSystem) + 8192 (command
# line not logged); sequenced after InstallServices, before InstallFinalize.
msibuild "$msi" -q "INSERT INTO CustomAction (Action, Type, Source, Target) VALUES ('WriteSilentProperties', 11282, 'presencebridge.exe', '--config \"[CommonAppDataFolder]presencebridge\\Presence.ini\" config set --if-set \"Account.main.TenantID=[TENANTID]\" \"Account.main.ClientID=[CLIENTID]\" \"Account.main.Auth=[AUTH]\" \"Account.main.Username=[USERNAME]\" \"Account.main.ClientSecret=[CLIENTSECRET]\"')"
msibuild "$msi" -q "INSERT INTO InstallExecuteSequence (Action, Condition, Sequence) VALUES ('WriteSilentProperties', 'NOT Installed AND NOT WIX_UPGRADE_DETECTED AND (TENANTID OR CLIENTID OR AUTH OR USERNAME OR CLIENTSECRET)', 5810)"
# Then the installer forgets the client secret (a type 51 action setting the
# property to nothing, after InstallFinalize, when the deferred action's command
# line has been formatted): Windows masks MsiHiddenProperties in its log, but
# Wine's msiexec lists every property at the end of a verbose log.
msibuild "$msi" -q "INSERT INTO CustomAction (Action, Type, Source) VALUES ('ForgetClientSecret', 51, 'CLIENTSECRET')"
msibuild "$msi" -q "INSERT INTO InstallExecuteSequence (Action, Condition, Sequence) VALUES ('ForgetClientSecret', 'CLIENTSECRET', 6610)"

mkdir -p "$out"
file="$out/presencebridge-$version-x64.msi"
cp "$msi" "$file"
echo "$file"
