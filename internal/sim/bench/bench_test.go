package bench_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/sim/bench"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// TestMain makes this test binary answer `simulate` as presencebridge does: bench
// runs the simulated tenant as a child process of its own executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "simulate" {
		if err := simulate.Main(os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintf(os.Stderr, "presencebridge simulate: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCommand(t *testing.T) {
	for args, want := range map[string]string{"": "bench", "--users 5": "bench", "delivery": "bench delivery", "delivery --changes 5": "bench delivery"} {
		if got := bench.Command(strings.Fields(args)); got != want {
			t.Errorf("Command(%q) = %q, want %q", args, got, want)
		}
	}
}

// A bad flag is a *simulate.UsageError the flag package has printed; a bad
// --deliver is the command's own failure.
func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"delivery", "--users", "5"}} {
		var stdout, stderr bytes.Buffer
		err := bench.Main(args, &stdout, &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || !usage.Printed || !strings.Contains(stderr.String(), "flag provided but not defined") {
			t.Errorf("%v: %v, stderr %q; want a printed UsageError", args, err, stderr.String())
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
		for _, want := range []string{"presencebridge bench: 60 users, 1 account", "first sight (resolve 60 UPNs + first cycle",
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
