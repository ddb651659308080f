package app

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
)

func TestHealth(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	acct := func(id string, lastGood time.Time, errText string) AccountReport {
		return AccountReport{ID: id, Polling: poll.Status{CycleInterval: time.Minute, LastGoodCycle: lastGood, LastError: errText},
			Sign: auth.Status{State: auth.StateOK}}
	}
	rep := StatusReport{TeamsEnabled: true, Accounts: []AccountReport{acct("a", t0, "Graph 503"), acct("b", time.Time{}, "")}}
	if ok, why := health(rep, t0.Add(2*time.Minute), t0); !ok {
		t.Errorf("2 of 3 cycles without a poll: unhealthy (%s)", why)
	}
	rep.Accounts[1].Sign = auth.Status{State: auth.StateNeedsLogin, LastError: "AADSTS70008", Fix: "presencebridge login --account b"}
	ok, why := health(rep, t0.Add(4*time.Minute), t0)
	if ok || !strings.Contains(why, "account a: no good poll for 4m0s: Graph 503") || !strings.Contains(why, "fix: presencebridge login --account b") {
		t.Errorf("4 cycles without a good poll: ok=%v %q", ok, why)
	}
	rep.Accounts[0].Polling.LastGoodCycle = t0.Add(3*time.Minute + 30*time.Second)
	if ok, _ := health(rep, t0.Add(4*time.Minute), t0); !ok {
		t.Error("one account polling keeps the service healthy")
	}
}

// /metrics carries the status figures and /healthz is 200 while polling works.
func TestMetricsEndpoint(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	r := startWith(t, path, func(cfg *config.Config) { cfg.MetricsAddr = "127.0.0.1:0" })
	waitFor(t, "a cycle and the metrics endpoint", func() bool {
		st := r.app.report()
		return r.app.MetricsAddr() != "" && r.account(t, "main").Polling.Cycles >= 1 && len(st.Targets) == 1 && st.Targets[0].Sent == 10
	}, r)
	get := func(p string) (int, string) {
		resp, err := http.Get("http://" + r.app.MetricsAddr() + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// A change after the first sightings, so the latency histogram has one.
	upn := sim.Users()[3].UPN
	if _, err := sim.SetPresence(upn, "Busy", "InAMeeting"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change delivered and settled", func() bool {
		last, _ := c.last("")
		return last[upn].Teams.Activity == "InAMeeting" && r.app.report().Targets[0].Sent == 11
	}, r)
	code, body := get("/metrics")
	for _, want := range []string{`presencebridge_users{account="main",state="resolved"} 10`, `presencebridge_poll_cycles_total{account="main"}`,
		`presencebridge_signin_ok{account="main",state="ok"} 1`, `presencebridge_target_up{target="http"} 1`,
		`presencebridge_target_sent_total{target="http"} 11`, "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	// The latency histograms: Teams change to acceptance per target, and
	// every presence read by outcome; no PBX latency without a PBX watch.
	st := r.app.report()
	lat := st.Targets[0].ChangeLatency
	reads := st.Accounts[0].PollRequests
	for _, want := range []string{
		"# HELP presencebridge_delivery_latency_seconds Time from the estimated moment of the change in Teams (midway between the two reads that tell it) to the target's acceptance.",
		"# TYPE presencebridge_delivery_latency_seconds histogram",
		fmt.Sprintf(`presencebridge_delivery_latency_seconds_bucket{target="http",le="+Inf"} %d`, lat.Count),
		`presencebridge_delivery_latency_seconds_bucket{target="http",le="2.5"}`,
		"# TYPE presencebridge_poll_request_seconds histogram",
		`presencebridge_poll_request_seconds_bucket{account="main",outcome="ok",le="0.05"}`,
		`presencebridge_poll_request_seconds_count{account="main",outcome="throttled"} 0`,
		`presencebridge_poll_request_seconds_count{account="main",outcome="error"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if lat.Count < 1 || lat.P50 <= 0 || reads.OK.Count < uint64(st.Accounts[0].Polling.Cycles) {
		t.Errorf("change latency %+v, presence reads %+v; want the change counted and a read per cycle", lat, reads.OK)
	}
	if strings.Contains(body, "presencebridge_pbx_delivery_latency_seconds") {
		t.Error("/metrics has the PBX state latency without a PBX watch")
	}
	if strings.Contains(body, "sim-secret") {
		t.Error("the client secret is in /metrics")
	}
	waitFor(t, "the client secret check", func() bool { return r.account(t, "main").Secret != nil }, r)
	if sec := r.account(t, "main").Secret; !strings.Contains(sec.Error, "Application.Read.All") || sec.Checked.IsZero() {
		t.Errorf("secret status without Application.Read.All = %+v", sec)
	}
	if !strings.Contains(r.logs.String(), "Client secret expiry unknown") {
		t.Errorf("the unknown secret expiry is not logged:\n%s", r.logs.String())
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Errorf("/healthz = %d %s", code, body)
	}
}
