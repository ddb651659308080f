package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/platform/histogram"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
	"github.com/presencebridge/presencebridge/internal/teams/write"
)

// status shows the PBX watch's totals, its failing users with the reason, and
// each account's writes to Teams, from the report as the control endpoint
// sends it (JSON).
func TestStatusShowsPBXWatch(t *testing.T) {
	rep := app.StatusReport{
		Accounts: []app.AccountReport{{ID: "main", Writes: &write.Status{Held: 2, Counts: write.Counts{Set: 5, Cleared: 3, Renewed: 1},
			Latency: write.LatencyReport{Samples: 5, P50Ms: 140, P95Ms: 410}}}},
		PBXWatch: &watch.Status{Users: 3, Subscribed: 2, Failed: 1, InCall: 2, Counts: watch.Counts{Notifies: 9},
			Problems: []watch.UserStatus{{UPN: "carl@x", SIPURI: "sip:1002@pbx", Error: "SUBSCRIBE sip:1002@pbx (Event: dialog): 404 Not Found"}}},
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back app.StatusReport
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printPBXWatch(globals{stdout: &out}, back)
	for _, want := range []string{"SUBSCRIBED", "calls      3      2           1       2          9        0",
		"sip:1002@pbx (carl@x): SUBSCRIBE sip:1002@pbx (Event: dialog): 404 Not Found",
		"Teams writes (account main): 2 calls shown now; set 5, renewed 1, cleared 3, failed 0, throttled 0; PBX to Teams p50 140 ms, p95 410 ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	printPBXWatch(globals{stdout: &out}, app.StatusReport{})
	if out.Len() != 0 {
		t.Errorf("without a watch status printed %q", out.String())
	}
}

// status shows each target's latency quantiles and each account's presence
// reads from the report as the control endpoint sends it (JSON), and nothing
// before the first.
func TestStatusShowsLatencies(t *testing.T) {
	var change, pbx, ok, throttled histogram.Histogram
	for _, ms := range []int{800, 1200, 1300, 1400, 2600} {
		change.Observe(time.Duration(ms) * time.Millisecond)
	}
	pbx.Observe(40 * time.Millisecond)
	ok.Observe(120 * time.Millisecond)
	ok.Observe(180 * time.Millisecond)
	throttled.Observe(30 * time.Millisecond)
	rep := app.StatusReport{
		Accounts: []app.AccountReport{{ID: "main", PollRequests: poll.RequestsStatus{OK: ok.Snapshot(), Throttled: throttled.Snapshot()}}},
		Targets:  []delivery.TargetStatus{{Name: "http", ChangeLatency: change.Snapshot(), PBXLatency: pbx.Snapshot()}, {Name: "sip"}},
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back app.StatusReport
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if got, want := readsLine(back.Accounts[0].PollRequests), "p50 175 ms, p95 242 ms, p99 248 ms (2 ok, 1 throttled, 0 failed)"; got != want {
		t.Errorf("reads line %q; want %q", got, want)
	}
	want := []string{"Teams change to accepted: p50 1.25 s, p95 2.88 s, p99 2.98 s over 5", "PBX state to accepted: p50 0.03 s, p95 0.05 s, p99 0.05 s over 1"}
	if got := latencyLines(back.Targets[0]); !slices.Equal(got, want) {
		t.Errorf("latency lines %q; want %q", got, want)
	}
	if got := latencyLines(back.Targets[1]); got != nil {
		t.Errorf("a target without deliveries: %q", got)
	}
	if got := readsLine(poll.RequestsStatus{}); got != "" {
		t.Errorf("an account without reads: %q", got)
	}
}

func TestStatusShowsResolving(t *testing.T) {
	if got, want := resolvingLine(poll.Status{Users: 50000, Resolved: 31200, Resolving: true}), "resolving users: resolved 31,200 of 50,000 (each is polled as soon as it is found)"; got != want {
		t.Errorf("%q; want %q", got, want)
	}
	if got := resolvingLine(poll.Status{Users: 50000, Resolved: 50000}); got != "" {
		t.Errorf("after resolving: %q", got)
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 200000: "200,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q; want %q", n, got, want)
		}
	}
}
