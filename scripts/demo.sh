#!/usr/bin/env bash
# make demo: run presencebridge against its built-in simulated tenant.
# 1. start `presencebridge simulate` (login + Graph on loopback, 300 users whose
#    presence changes like an office's) and let it write a Presence.ini for itself;
# 2. `presencebridge login`: the device-code flow, approved by the simulated tenant;
# 3. `presencebridge run` for DEMO_SECONDS: each Teams change travels to the PBX side
#    that `simulate --pbx` runs (an HTTP CTI receiver, and Kamailio as the SIP presence
#    server with a watcher on three users when kamailio is installed); every arrival
#    is printed with its latency from the Teams change;
# 4. a restart of `run` that needs no second sign-in, `sync-all`, `status` and
#    `presence get` (which shows what each target last received).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/presencebridge}
USERS=${DEMO_USERS:-300}
SECONDS_RUN=${DEMO_SECONDS:-30}
DIR=$(mktemp -d -t presencebridge-demo.XXXXXX)
SIM_PID=
cleanup() {
	[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

KAM=()
if command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ]; then
	KAM=(--kamailio 3)
else
	echo "(kamailio is not installed: the PBX side is HTTP only; apt-get install kamailio kamailio-presence-modules adds SIP)"
fi
say "Starting the simulated tenant with $USERS users (changes at 60 per user per hour) and its PBX side"
"$BIN" simulate --addr 127.0.0.1:0 --users "$USERS" --rate 60 --approve-after 3s --interval 2s \
	--pbx 127.0.0.1:0 "${KAM[@]}" --write-config "$DIR" >"$DIR/ready.json" 2>"$DIR/simulate.log" &
SIM_PID=$!
for _ in $(seq 1 100); do [ -s "$DIR/ready.json" ] && break; sleep 0.1; done
[ -s "$DIR/ready.json" ] || { cat "$DIR/simulate.log"; exit 1; }
echo "Tenant: $(cat "$DIR/ready.json")"
echo "Config written to $DIR/Presence.ini:"
sed 's/^/    /' "$DIR/Presence.ini"

PB=("$BIN" --config "$DIR/Presence.ini")
say "presencebridge login (the simulated tenant approves the code after 3 s)"
"${PB[@]}" login

say "presencebridge run for ${SECONDS_RUN}s: each line is what arrived at the PBX side"
echo "(first sightings of the $USERS users are delivered too; only changes are shown)"
tail -n 0 -f "$DIR/simulate.log" | grep --line-buffered -E '^(HTTP|SIP) ' | grep --line-buffered -v 'state at start' &
TAIL_PID=$!
timeout -s INT "$SECONDS_RUN" "${PB[@]}" run 2>"$DIR/run.log" || true
sleep 0.5
kill "$TAIL_PID" 2>/dev/null || true
say "Latency from the Teams change to the PBX (HTTP arrivals of changes during the run)"
grep -E '^HTTP .* s after the Teams change' "$DIR/simulate.log" | sed -E 's/.*; ([0-9.]+) s after.*/\1/' |
	sort -n | awk '{a[NR]=$1; s+=$1} END { if (NR) printf "  %d changes: mean %.2f s, median %.2f s, max %.2f s\n", NR, s/NR, a[int((NR+1)/2)], a[NR]; else print "  no change arrived" }'

say "Restart: run again for 8 s; no second sign-in, and each user's last state re-asserted at [Delivery] ReassertRate (a PBX may have restarted meanwhile)"
timeout -s INT 8 "${PB[@]}" run || true

say "presencebridge sync-all (the service is stopped, so the command delivers them itself)"
"${PB[@]}" sync-all

say "presencebridge status"
"${PB[@]}" status

U=$(sed -n 2p "$DIR/users.csv" | cut -d';' -f1)
say "presencebridge presence get $U"
"${PB[@]}" presence get "$U"
