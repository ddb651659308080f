#!/usr/bin/env bash
# make demo: run presencebridge against its built-in simulated tenant.
# 1. start `presencebridge simulate` (login + Graph on loopback, 300 users whose
#    presence changes like an office's) and let it write a Presence.ini for itself;
# 2. `presencebridge login`: the device-code flow, approved by the simulated tenant;
# 3. `presencebridge run` for DEMO_SECONDS, printing each presence change;
# 4. a restart of `run` that needs no second sign-in, then `status` and `presence get`.
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

say "Starting the simulated tenant with $USERS users (changes at 60 per user per hour)"
"$BIN" simulate --addr 127.0.0.1:0 --users "$USERS" --rate 60 --approve-after 3s \
	--write-config "$DIR" >"$DIR/ready.json" 2>"$DIR/simulate.log" &
SIM_PID=$!
for _ in $(seq 1 100); do [ -s "$DIR/ready.json" ] && break; sleep 0.1; done
[ -s "$DIR/ready.json" ] || { cat "$DIR/simulate.log"; exit 1; }
echo "Tenant: $(cat "$DIR/ready.json")"
echo "Config written to $DIR/Presence.ini:"
sed 's/^/    /' "$DIR/Presence.ini"

PB=("$BIN" --config "$DIR/Presence.ini")
say "presencebridge login (the simulated tenant approves the code after 3 s)"
"${PB[@]}" login

say "presencebridge run for ${SECONDS_RUN}s: each line is a Teams presence change"
timeout -s INT "$SECONDS_RUN" "${PB[@]}" run || true

say "Restart: run again for 8 s; no second sign-in, and no flood of old states"
timeout -s INT 8 "${PB[@]}" run || true

say "presencebridge status"
"${PB[@]}" status

U=$(sed -n 2p "$DIR/users.csv" | cut -d';' -f1)
say "presencebridge presence get $U"
"${PB[@]}" presence get "$U"
