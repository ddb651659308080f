#!/usr/bin/env bash
# make demo: run presencebridge against its built-in simulated tenant.
# 1. start `presencebridge simulate` (login + Graph on loopback, 300 users whose
#    presence changes like an office's) and let it write a Presence.ini for itself;
# 2. `presencebridge login`: the device-code flow, approved by the simulated tenant;
# 3. `presencebridge run` for DEMO_SECONDS: each Teams change travels to the PBX side
#    that `simulate --pbx` runs (an HTTP CTI receiver, and Kamailio as the SIP presence
#    server with a watcher on three users when kamailio is installed); every arrival
#    is printed with its latency from the Teams change;
# 4. a restart of `run` that needs no second sign-in;
# 5. the other direction (with kamailio): Kamailio is also a small PBX
#    (`simulate --kamailio-pbx`), two simulated users' phones call each other
#    through it (POST /_sim/call on the PBX side), and presencebridge, watching the
#    PBX's calls ([PBX] Watch = dialog), shows the call in Teams and clears it after
#    the hang-up; a second account with a client secret writes it (`--secret-users`);
# 6. `sync-all`, `status` and `presence get` (which shows what each target last
#    received).
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

# Kamailio (with Debian's kamailio-presence-modules) is the SIP presence server
# and, for the calls, a small PBX; the simulator loads its modules from here.
KMODS=/usr/lib/x86_64-linux-gnu/kamailio/modules
KAM=()
CALLS=
if { command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ]; } && [ -f "$KMODS/presence_dialoginfo.so" ] && [ -f "$KMODS/pua_dialoginfo.so" ]; then
	KAM=(--kamailio 3 --kamailio-pbx --secret-users 2)
	CALLS=1
else
	echo "(kamailio or its presence modules are not installed: the PBX side is HTTP only, and the call from the PBX into Teams"
	echo " is skipped, because the simulated phones need Kamailio as a small PBX to call through;"
	echo " apt-get install kamailio kamailio-presence-modules adds both)"
fi
say "Starting the simulated tenant with $USERS users (changes at 60 per user per hour) and its PBX side"
"$BIN" simulate --addr 127.0.0.1:0 --users "$USERS" --rate 60 --approve-after 3s \
	--pbx 127.0.0.1:0 "${KAM[@]}" --write-config "$DIR" >"$DIR/ready.json" 2>"$DIR/simulate.log" &
SIM_PID=$!
for _ in $(seq 1 100); do [ -s "$DIR/ready.json" ] && break; sleep 0.1; done
[ -s "$DIR/ready.json" ] || { cat "$DIR/simulate.log"; exit 1; }
echo "Tenant: $(cat "$DIR/ready.json")"
echo "Config written to $DIR/Presence.ini:"
sed 's/^/    /' "$DIR/Presence.ini"
# The two users who call each other below, and their SIP URIs.
A=$(sed -n 2p "$DIR/users.csv" | cut -d';' -f1)
B=$(sed -n 3p "$DIR/users.csv" | cut -d';' -f1)
A_SIP=$(sed -n 2p "$DIR/users.csv" | cut -d';' -f2)
B_SIP=$(sed -n 3p "$DIR/users.csv" | cut -d';' -f2)
if [ -n "$CALLS" ]; then
	echo "Two accounts: [Account.demo] signs in with the device code (next) and reads the presence of"
	echo "$((USERS - 2)) users; [Account.app] signs in with a client secret and serves $A and $B"
	echo "(users.csv's Account column). [PBX] Watch = dialog has presencebridge watch every user's calls on"
	echo "the PBX and show them in Teams, which means writing other users' presence (setPresence): only an"
	echo "app registration with Presence.ReadWrite.All (client secret or certificate) may, a device-code"
	echo "account cannot. So the calls of $A and $B show in Teams (the last part of this demo)."
fi

PB=("$BIN" --config "$DIR/Presence.ini")
say "presencebridge login --account demo (the simulated tenant approves the code after 3 s)"
"${PB[@]}" login --account demo

say "presencebridge run for ${SECONDS_RUN}s: each line is what arrived at the PBX side"
echo "(first sightings of the $USERS users are delivered too; only changes are shown)"
tail -n 0 -f "$DIR/simulate.log" | grep --line-buffered -E '^(HTTP|SIP) ' | grep --line-buffered -v 'state at start' &
TAIL_PID=$!
timeout -s INT "$SECONDS_RUN" "${PB[@]}" run 2>"$DIR/run.log" &
RUN_PID=$!
# The steady state begins with presencebridge's first poll cycle that read every
# user: changes made in Teams before it (during the sign-in, before the first
# read) arrive as first sightings, late by the wait. status --json (asked of the
# running service once its control endpoint listens) gives each account's
# lastGoodCycle, the end of its last cycle that read every user: the first one
# while status is asked every 0.2 s and cycles take 2 s (a later one leaves out
# a few more changes, never counts a sign-in wait). The latest over the
# accounts is when every user had been read.
FIRST_GOOD=
while kill -0 "$RUN_PID" 2>/dev/null; do
	if grep -q 'Control endpoint listening' "$DIR/run.log" 2>/dev/null; then
		st=$("${PB[@]}" status --json 2>/dev/null | tr -d ' \n' || true)
		accounts=$(grep -o '"polling":{' <<<"$st" | wc -l || true)
		goods=$(grep -o '"lastGoodCycle":"[^"]*"' <<<"$st" | cut -d'"' -f4 || true)
		if [ "$accounts" -gt 0 ] && [ "$(grep -c . <<<"$goods" || true)" -eq "$accounts" ]; then
			FIRST_GOOD=$(while read -r t; do date -d "$t" '+%s.%N %H:%M:%S.%N'; done <<<"$goods" | sort -n | tail -n 1 | cut -d' ' -f2)
			break
		fi
	fi
	sleep 0.2
done
wait "$RUN_PID" || true
sleep 0.5
kill "$TAIL_PID" 2>/dev/null || true
say "Latency from the Teams change to the PBX (HTTP arrivals of the changes made after the first good poll cycle)"
if [ -z "$FIRST_GOOD" ]; then
	echo "  presencebridge never completed a poll cycle that read every user; its warnings and errors:"
	grep -E 'level=(WARN|ERROR)' "$DIR/run.log" | sed 's/^/    /' || true
else
	# "...; 1.45 s after the Teams change at 10:15:02.345)": latency, the change's time.
	changes=$(sed -nE 's/^HTTP .*; ([0-9.]+) s after the Teams change at ([0-9:.]+)\)$/\1 \2/p' "$DIR/simulate.log")
	steady=$(awk -v first="$FIRST_GOOD" '
		function sec(hms, p) { split(hms, p, ":"); return p[1] * 3600 + p[2] * 60 + p[3] }
		NF == 2 { t = sec($2); if (t < sec(first) - 43200) t += 86400; if (t >= sec(first)) print $1 }' <<<"$changes" | sort -n)
	all=$(grep -c . <<<"$changes" || true)
	n=$(grep -c . <<<"$steady" || true)
	echo "  presencebridge's first poll cycle that read every user ended at ${FIRST_GOOD:0:12}"
	# Sorted latencies in; nearest-rank percentiles out.
	awk 'NF { a[++n] = $1; s += $1 }
		function q(p, i) { i = int(p * n); if (i < p * n) i++; if (i < 1) i = 1; return a[i] }
		END {
			if (n) printf "  %d changes made in Teams after it: mean %.2f s, p50 %.2f s, p95 %.2f s, p99 %.2f s, max %.2f s\n", n, s / n, q(0.50), q(0.95), q(0.99), a[n]
			else print "  no change made in Teams after it arrived"
		}' <<<"$steady"
	echo "  ($((all - n)) changes made before it, during the sign-in and the first read, are left out: they waited for it)"
fi

say "Restart: run again for 8 s; no second sign-in, and each user's last state re-asserted at [Delivery] ReassertRate (a PBX may have restarted meanwhile)"
timeout -s INT 8 "${PB[@]}" run || true

# post URL JSON: an HTTP POST through bash's own /dev/tcp (a fresh Debian may
# have no curl); prints the answer's body and fails unless it is 200 OK.
post() {
	local rest=${1#http://} hostport path reply
	hostport=${rest%%/*}
	path=/${rest#*/}
	exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}" || return 1
	printf 'POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
		"$path" "$hostport" "${#2}" "$2" >&3
	reply=$(cat <&3)
	exec 3<&-
	printf '%s\n' "${reply#*$'\r\n\r\n'}"
	[[ $reply == HTTP/1.?" 200 "* ]]
}

if [ -n "$CALLS" ]; then
	CALL_URL=$(sed -n 's/.*"callURL":"\([^"]*\)".*/\1/p' "$DIR/ready.json")
	say "Calls into Teams: $A calls $B through the PBX, and presencebridge shows it in Teams"
	echo "Kamailio is the PBX: the simulator registers a phone for each ($A_SIP, $B_SIP), calls, and hangs"
	echo "up after 5 s. presencebridge watches every user's calls (SUBSCRIBE, Event: dialog), sets a user in a call"
	echo "Busy/InACall in Teams (setPresence, with account app's client id as the session) and clears that session when"
	echo "the call ends (clearPresence), so Teams shows again what the user had before. For this part"
	echo "RichPresence.WinningTechnology = SipSimple: the PBX's own state wins on the CTI (HTTP) and SIP side while the"
	echo "phones ring and talk (with MSTeams they would show the call only once Teams says so)."
	echo "CALL: the PBX; TEAMS: what Graph was told; HTTP, SIP: what the PBX side received."
	"${PB[@]}" config set RichPresence.WinningTechnology=SipSimple
	"${PB[@]}" run 2>"$DIR/run-calls.log" &
	RUN_PID=$!
	# Wait until presencebridge watches every user on the PBX and has re-asserted
	# every user's last state to the targets (status asks the running service), so
	# the PBX is not busy with that burst when the call starts.
	n= u=
	for _ in $(seq 1 40); do
		kill -0 "$RUN_PID" 2>/dev/null || break
		st=$("${PB[@]}" status --json 2>/dev/null | tr -d ' \n' || true)
		watched=$(grep -o '"pbxWatch":{"users":[0-9]*,"subscribed":[0-9]*' <<<"$st" || true)
		n=${watched##*:}
		u=${watched#*\"users\":}
		u=${u%%,*}
		grep -q '"running":true' <<<"$st" && [ -n "$n" ] && [ "$n" = "$u" ] && ! grep -q '"reasserting":true' <<<"$st" && break
		sleep 0.5
	done
	echo "presencebridge watches ${n:-no} of ${u:-the} users on the PBX; placing the call:"
	# From the log's next line on, counted now (tail -n 0 could start after the call's first line).
	next=$(($(wc -l <"$DIR/simulate.log") + 1))
	tail -n +"$next" -f "$DIR/simulate.log" |
		grep --line-buffered -E "^(CALL|TEAMS) |^(HTTP|SIP) +($A|$B|$A_SIP|$B_SIP) " &
	CALL_TAIL=$!
	if post "$CALL_URL" "{\"from\":\"$A\",\"to\":\"$B\",\"duration\":\"5s\"}" >"$DIR/call.json"; then
		# Until Teams was told both calls ended (5 s after the answer), then a poll
		# cycle for the PBX side to get the users' own Teams state back.
		for _ in $(seq 1 40); do
			[ "$(grep -c '^TEAMS .*(clearPresence by' "$DIR/simulate.log")" -ge 2 ] && break
			sleep 0.5
		done
		sleep 2.5
	else
		echo "The call failed: $(cat "$DIR/call.json")"
	fi
	kill -INT "$RUN_PID" 2>/dev/null || true
	wait "$RUN_PID" || true
	sleep 0.3
	kill "$CALL_TAIL" 2>/dev/null || true
	if [ "$(grep -c '^TEAMS .*(clearPresence by' "$DIR/simulate.log")" -lt 2 ]; then
		echo "Teams was not told both calls ended; presencebridge's warnings and errors:"
		grep -E 'level=(WARN|ERROR)' "$DIR/run-calls.log" | sed 's/^/    /' || true
	fi
else
	say "Calls into Teams: skipped"
	echo "The simulated phones need Kamailio as a small PBX to call through, and it is not installed"
	echo "(apt-get install kamailio kamailio-presence-modules)."
fi

say "presencebridge sync-all (the service is stopped, so the command delivers them itself)"
"${PB[@]}" sync-all

say "presencebridge status"
"${PB[@]}" status

say "presencebridge presence get $A"
"${PB[@]}" presence get "$A"
