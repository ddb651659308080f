package app

import (
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
	_, path := deliveryTenant(t, c.srv.URL)
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
	code, body := get("/metrics")
	for _, want := range []string{`presencebridge_users{account="main",state="resolved"} 10`, `presencebridge_poll_cycles_total{account="main"}`,
		`presencebridge_signin_ok{account="main",state="ok"} 1`, `presencebridge_target_up{target="http"} 1`,
		`presencebridge_target_sent_total{target="http"} 10`, "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
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
