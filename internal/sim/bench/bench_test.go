package bench_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/bench"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// TestMain makes this test binary answer `simulate` and `--config PATH run` as
// presencebridge does: bench runs the simulated tenant, and bench calls
// presencebridge itself, as child processes of its own executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "simulate" {
		if err := simulate.Main(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "presencebridge simulate: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) == 4 && os.Args[1] == "--config" && os.Args[3] == "run" {
		if err := runApp(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "presencebridge run: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runApp stands in for `presencebridge run` (package main, which a test cannot
// import): the same App on the same Presence.ini until SIGINT or SIGTERM, without
// what run adds for a service (reloads, sd_notify, the service manager).
func runApp(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	a, err := app.Open(app.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), Version: "bench test"})
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

func TestCommand(t *testing.T) {
	for args, want := range map[string]string{"": "bench", "--users 5": "bench", "delivery": "bench delivery", "delivery --changes 5": "bench delivery",
		"calls": "bench calls", "calls --burst 5": "bench calls", "latency": "bench latency", "latency --users 5": "bench latency"} {
		if got := bench.Command(strings.Fields(args)); got != want {
			t.Errorf("Command(%q) = %q, want %q", args, got, want)
		}
	}
}

// A bad flag is a *simulate.UsageError the flag package has printed; numbers
// bench calls cannot work with are one it has not; a bad --deliver is the
// command's own failure.
func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"delivery", "--users", "5"}, {"calls", "--changes", "5"}, {"latency", "--cycles", "5"}} {
		var stdout, stderr bytes.Buffer
		err := bench.Main(args, &stdout, &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || !usage.Printed || !strings.Contains(stderr.String(), "flag provided but not defined") {
			t.Errorf("%v: %v, stderr %q; want a printed UsageError", args, err, stderr.String())
		}
	}
	for args, want := range map[string]string{
		"--phones 3":               "--phones 3 must be even, from 2 to --watched (1000)",
		"--users 10":               "--watched 1000 must be from 2 to --users (10)",
		"--burst 501":              "--calls 50 and --burst 501 must be at least 1, and twice --burst at most --watched (1000)",
		"--calls 0":                "--calls 0 and --burst 100 must be at least 1, and twice --burst at most --watched (1000)",
		"--watched 20 --phones 40": "--phones 40 must be even, from 2 to --watched (20)",
		"--watched 20 extra":       `unexpected argument "extra"`,
	} {
		var stderr bytes.Buffer
		err := bench.Main(append([]string{"calls"}, strings.Fields(args)...), new(bytes.Buffer), &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || usage.Printed || err.Error() != want || stderr.Len() > 0 {
			t.Errorf("calls %s: %v (stderr %q); want a UsageError %q, not printed", args, err, stderr.String(), want)
		}
	}
	for args, want := range map[string]string{
		"--targets ftp":            `--targets "ftp": use http, sip or http,sip`,
		"--targets http,":          `--targets "http,": use http, sip or http,sip`,
		"--users 0":                "--users 0: use 1 or more",
		"--rate 0":                 "--rate 0: use Teams changes per second above 0, e.g. 50",
		"--rate NaN":               "--rate NaN: use Teams changes per second above 0, e.g. 50",
		"--duration 0s":            "--duration 0s: use a duration above 0, e.g. 60s",
		"--budget-requests 0":      "--budget-requests 0: use 1 or more (Microsoft: 1500)",
		"--users 10 --accounts 11": "--accounts 11: use 1 to --users (10)",
		"--users 10 --watch 20":    "--watch 20: use 1 to --users (10); the SIP latency is measured at the watcher",
		"--users 10 --watch 0":     "--watch 0: use 1 to --users (10); the SIP latency is measured at the watcher",
		"--users 10 extra":         `unexpected argument "extra"`,
	} {
		var stderr bytes.Buffer
		err := bench.Main(append([]string{"latency"}, strings.Fields(args)...), new(bytes.Buffer), &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || usage.Printed || err.Error() != want || stderr.Len() > 0 {
			t.Errorf("latency %s: %v (stderr %q); want a UsageError %q, not printed", args, err, stderr.String(), want)
		}
	}
	err := bench.Main([]string{"--deliver", "sip"}, new(bytes.Buffer), new(bytes.Buffer))
	var usage *simulate.UsageError
	if err == nil || errors.As(err, &usage) || err.Error() != `--deliver "sip": use http, or leave it out` {
		t.Errorf("--deliver sip: %v, want the command's error", err)
	}
}

// figure returns the number after label in bench's output.
func figure(t *testing.T, out, label string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(label) + `\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in\n%s", label, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// bench polls the simulated tenant in its child process and prints every figure;
// with --deliver http every user's state reaches the tenant's CTI receiver.
func TestBenchPollsTheSimulatedTenant(t *testing.T) {
	for _, deliver := range []string{"", "http"} {
		var stdout, stderr bytes.Buffer
		if err := bench.Main([]string{"--users", "60", "--cycles", "1", "--deliver", deliver}, &stdout, &stderr); err != nil {
			t.Fatalf("--deliver %q: %v\n%s", deliver, err, stderr.String())
		}
		out := stdout.String()
		for _, want := range []string{"presencebridge bench: 60 users, 1 account", "first sight (resolve 60 UPNs + a whole cycle",
			"cycle time, mean / max:", " over 1 cycles", "max requests in any 30 s window at the tenant: map[presencebridge-daemon:",
			"CPU during measured cycles:", "peak RSS:", "Go heap in use:", "state file:"} {
			if !strings.Contains(out, want) {
				t.Errorf("--deliver %q: no %q in\n%s", deliver, want, out)
			}
		}
		if n := figure(t, out, "requests per cycle:"); n != 1 {
			t.Errorf("--deliver %q: %d requests per cycle for 60 users, want 1 (650 ids per request)", deliver, n)
		}
		if n := figure(t, out, "429s seen:"); n != 0 {
			t.Errorf("--deliver %q: %d 429s, want none", deliver, n)
		}
		if deliver == "" {
			if n := figure(t, out, "changes passed on:"); n < 60 {
				t.Errorf("%d changes passed on, want at least the 60 first sightings", n)
			}
		} else if n := figure(t, out, "delivered to the CTI:"); n < 60 {
			t.Errorf("%d states delivered to the CTI, want at least the 60 first sightings", n)
		}
	}
}

// bench delivery puts a burst through outbox and dispatcher into each target and
// prints how fast each accepted it; Kamailio's runs need it installed.
func TestBenchDelivery(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := bench.Delivery([]string{"--changes", "300"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	out := stdout.String()
	sections := strings.Split(out, "\n\n")
	got := map[string]string{}
	for _, s := range sections[1:] {
		name, body, _ := strings.Cut(s, "\n")
		got[name] = body
	}
	want := []string{"HTTP POST per change to a CTI on loopback", "HTTP POST batches ([HTTP] Batch = 1) to a CTI on loopback"}
	_, kamErr := kamailio.Find()
	if kamErr == nil {
		want = append(want, "SIP PUBLISH over UDP into Kamailio", "SIP PUBLISH over UDP into Kamailio, digest auth")
	}
	accepted := regexp.MustCompile(`(?m)^  [a-z ]+: +300 accepted in +[0-9.]+ s  \( *[0-9]+ changes/s; presencebridge CPU [0-9]+% of one core\)$`)
	for _, name := range want {
		body, ok := got[name]
		if !ok {
			t.Errorf("no run %q in\n%s", name, out)
			continue
		}
		if n := len(accepted.FindAllString(body, -1)); n != 2 || !strings.Contains(body, "failed attempts: 0, dropped: 0") {
			t.Errorf("%s: %d bursts of 300 accepted, want 2, and no failures:\n%s", name, n, body)
		}
	}
	testkit.Tool(t, "the Kamailio part of bench delivery", kamErr)
}

// bench calls with small numbers: real calls through Kamailio as the PBX,
// watched by presencebridge (its own process) and shown in the simulated
// tenant, one at a time and in a burst; every figure is printed, every call
// reached Teams and ended there, and nothing was throttled. Speed is the
// bench's to print, not this test's to judge.
func TestBenchCalls(t *testing.T) {
	testkit.Need(t, "the bench calls test", kamailio.Find)
	var stdout, stderr bytes.Buffer
	// --rate 0: no user changes their own Teams state meanwhile, so each one
	// in a call shows it (a DoNotDisturb of their own would outrank it).
	err := bench.Main([]string{"calls", "--users", "200", "--watched", "20", "--phones", "10", "--calls", "5", "--burst", "10", "--rate", "0"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"presencebridge bench calls: 200 users polled (1 account, client secret, budget 1500 requests/30s, share 60%, interval auto: 2s),",
		"20 of them watched on Kamailio as the PBX", "the other 180 have no SIP URI", "20 users subscribed",
		"one by one: 5 calls, one at a time, between 10 registered phones",
		"burst: 10 calls starting within 1 s between 20 phones (20 users)",
		"showing Busy/InACall in the tenant then:      20 of 20\n",
		"20 of 20 back to their own state (no session)",
		"presencebridge's writes: 30 setPresence, 30 clearPresence, 0 failed",
		"PBX watch: 20 users subscribed, 0 failed,",
		"presencebridge (presencebridge run, its own process):", "peak RSS:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	samples := regexp.MustCompile(`(?m)^  (confirmed|ended) NOTIFY -> (set|clear)Presence accepted, (callee|caller|both): +p50 +[0-9.]+ ms  p95 +[0-9.]+ ms  p99 +[0-9.]+ ms  \(max [0-9.]+ ms, (\d+) samples\)$`)
	got := map[string]string{}
	for _, m := range samples.FindAllStringSubmatch(out, -1) {
		got[m[1]+" "+m[3]] = m[4]
	}
	if want := map[string]string{"confirmed callee": "5", "confirmed caller": "5", "confirmed both": "10", "ended both": "10"}; !maps.Equal(got, want) {
		t.Errorf("latency samples %v, want %v, in\n%s", got, want, out)
	}
	for _, label := range []string{"all 20 setPresence accepted by the tenant:", "all 20 clearPresence accepted by the tenant:"} {
		if !regexp.MustCompile(regexp.QuoteMeta(label) + ` +[0-9.]+ s`).MatchString(out) {
			t.Errorf("no %q with a time in\n%s", label, out)
		}
	}
	if n := len(regexp.MustCompile(`429s: 0\b`).FindAllString(out, -1)); n != 4 {
		t.Errorf("%d reports of no 429s, want 4 (start, burst, hang-up, whole run):\n%s", n, out)
	}
	for _, bad := range []string{"FAILED", "NOT SHOWN", "NOT BACK", "NOT ALL"} {
		if strings.Contains(out, bad) {
			t.Errorf("%q in\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "presencebridge counted 0 on polls, 0 on writes") {
		t.Errorf("presencebridge counted 429s:\n%s", out)
	}
}

// latencyRow is one target's row of bench latency's table, by column.
type latencyRow map[string]string

// latencyTable reads the table bench latency printed (columns two spaces or
// more apart) and its Markdown copy, by target.
func latencyTable(t *testing.T, out string) (table, markdown map[string]latencyRow) {
	t.Helper()
	table, markdown = map[string]latencyRow{}, map[string]latencyRow{}
	var cols []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "users  "):
			cols = regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		case cols != nil && strings.HasPrefix(line, "| users |"):
			cols = strings.Split(strings.Trim(line, "| "), " | ")
		case cols != nil && strings.HasPrefix(line, "|") && !strings.HasPrefix(line, "| ---"):
			cells := strings.Split(strings.Trim(line, "| "), " | ")
			row := latencyRow{}
			for i, c := range cells {
				if i < len(cols) {
					row[cols[i]] = c
				}
			}
			markdown[row["target"]] = row
		case cols != nil && line != "" && !strings.HasPrefix(line, "|"):
			cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
			if len(cells) != len(cols) {
				t.Fatalf("table row %q has %d cells, the header %d: %q", line, len(cells), len(cols), cols)
			}
			row := latencyRow{}
			for i, c := range cells {
				row[cols[i]] = c
			}
			table[row["target"]] = row
		}
	}
	return table, markdown
}

// seconds reads a cell such as "0.47 s"; it fails the test on anything else.
func seconds(t *testing.T, row latencyRow, col string) float64 {
	t.Helper()
	v, ok := strings.CutSuffix(row[col], " s")
	f, err := strconv.ParseFloat(v, 64)
	if !ok || err != nil {
		t.Fatalf("%s of %s: %q, want seconds", col, row["target"], row[col])
	}
	return f
}

// checkLatencyRows checks each target's row of bench latency's output: the
// latencies in order and above zero with samples behind them, the cold start
// and the warm restart measured, nothing throttled, and the Markdown copy the
// same. The figures are the bench's to print, not this test's to judge.
func checkLatencyRows(t *testing.T, out, users, accounts string, targets ...string) {
	t.Helper()
	table, markdown := latencyTable(t, out)
	if len(table) != len(targets) {
		t.Fatalf("table rows for %v, want %v:\n%s", slices.Collect(maps.Keys(table)), targets, out)
	}
	for _, target := range targets {
		row := table[target]
		if row == nil {
			t.Fatalf("no %s row in\n%s", target, out)
		}
		if !maps.Equal(row, markdown[target]) {
			t.Errorf("%s: Markdown row %v, table row %v; want the same", target, markdown[target], row)
		}
		if row["users"] != users || row["accounts"] != accounts || row["interval"] != "1s" || row["429s"] != "0" {
			t.Errorf("%s row %v: want %s users, %s account(s), interval 1s, no 429s", target, row, users, accounts)
		}
		last := 0.0
		for _, col := range []string{"p50", "p95", "p99", "max"} {
			v := seconds(t, row, col)
			if v <= 0 || v < last {
				t.Errorf("%s %s = %v s after %v s; want latencies above 0, in order: %v", target, col, v, last, row)
			}
			last = v
		}
		if n, err := strconv.Atoi(strings.Fields(row["samples"])[0]); err != nil || n < 1 {
			t.Errorf("%s samples %q, want some", target, row["samples"])
		}
		for _, col := range []string{"cold start", "warm: first read", "warm: all read"} {
			if seconds(t, row, col) <= 0 {
				t.Errorf("%s %s = %q, want a time", target, col, row[col])
			}
		}
		if !regexp.MustCompile(`^\d+\.\d%$`).MatchString(row["CPU"]) || !regexp.MustCompile(`^[1-9]\d* MiB$`).MatchString(row["peak RSS"]) {
			t.Errorf("%s CPU %q, peak RSS %q; want figures", target, row["CPU"], row["peak RSS"])
		}
		if !strings.Contains(out, "  "+target+": ") || !strings.Contains(out, " Teams changes; 0 arrivals showing no recent Teams state\n") {
			t.Errorf("%s: no sample count, or arrivals that match no Teams state:\n%s", target, out)
		}
	}
	for _, want := range []string{"cold start (empty state file): first presence read ", "; until the first good cycle 0 arrivals showed no Teams state\n",
		"after the steady state: everything delivered within ",
		"warm restart (same state file): first presence read "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// bench latency in small: 300 users changing 60 times a second in all, polled
// every second by two accounts (each with an app registration of its own),
// delivered to the tenant's CTI; every figure of the row is there and sane.
func TestBenchLatency(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := bench.Main([]string{"latency", "--users", "300", "--rate", "60", "--duration", "3s", "--interval", "1s", "--targets", "http", "--accounts", "2", "--markdown"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "presencebridge bench latency: 300 users, 2 account(s), 60 Teams changes/s (720.00 per user per hour), budget 1,500 requests/30s, targets http\n") {
		t.Errorf("first line of\n%s", out)
	}
	checkLatencyRows(t, out, "300", "2", "http")
}

// bench latency with Kamailio too: every user published there, all 300
// watched by the independent watcher.
func TestBenchLatencySIP(t *testing.T) {
	testkit.Need(t, "the bench latency test of SIP", kamailio.Find)
	var stdout, stderr bytes.Buffer
	err := bench.Main([]string{"latency", "--users", "300", "--rate", "60", "--duration", "3s", "--interval", "1s", "--watch", "300", "--markdown"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "targets http,sip, SIP watcher on 300 users\n") {
		t.Errorf("first line of\n%s", out)
	}
	checkLatencyRows(t, out, "300", "1", "http", "sip")
	if row, _ := latencyTable(t, out); !strings.HasSuffix(row["sip"]["samples"], " (300 watched)") {
		t.Errorf("sip samples %q, want the watched users named", row["sip"]["samples"])
	}
}
