package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/pbx/watch"
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
