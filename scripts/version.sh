#!/bin/sh
# Prints presencebridge's version in one flavour, from `git describe`:
#   scripts/version.sh deb    a Debian version:  on tag vX.Y.Z -> X.Y.Z;
#                             N commits after it -> X.Y.Z+N.g<hash>;
#                             no tag -> 0.1.<commits>+g<hash>; ".dirty" if edited
#   scripts/version.sh msi    a ProductVersion: X.Y.<commits> (0.1.<commits> with no
#                             tag). Windows Installer compares only the first three
#                             fields, so the third must grow with every build: the
#                             commit count does. Tag releases vX.Y.Z with X.Y growing.
#   scripts/version.sh        what `presencebridge version` prints (git describe)
set -eu
cd "$(dirname "$0")/.."
flavour=${1:-plain}
count=$(git rev-list --count HEAD 2>/dev/null || echo 0)
hash=$(git rev-parse --short HEAD 2>/dev/null || echo 0000000)
dirty=
if ! git diff --quiet HEAD 2>/dev/null; then dirty=.dirty; fi
desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null || true)
if [ -n "$desc" ]; then
	# v1.2.3-4-gabcdef0
	tag=${desc%-*-g*}
	rest=${desc#"$tag"-}
	n=${rest%%-*}
	xyz=${tag#v}
else
	xyz=0.1.$count
	n=
fi
xy=$(echo "$xyz" | cut -d. -f1-2)
case $flavour in
deb)
	if [ -n "$desc" ] && [ "$n" = 0 ]; then
		echo "$xyz$dirty"
	elif [ -n "$desc" ]; then
		echo "$xyz+$n.g$hash$dirty"
	else
		echo "$xyz+g$hash$dirty"
	fi
	;;
msi) echo "$xy.$count" ;;
plain) git describe --tags --always --dirty 2>/dev/null || echo dev ;;
*)
	echo "usage: $0 [deb|msi]" >&2
	exit 2
	;;
esac
