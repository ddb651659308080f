package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// recordingCTI is an HTTP CTI on loopback that keeps every document it accepts;
// down makes it answer 503.
type recordingCTI struct {
	srv  *httptest.Server
	mu   sync.Mutex
	docs []cti.Document
	down atomic.Bool
}

func newRecordingCTI(t *testing.T) *recordingCTI {
	c := &recordingCTI{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.down.Load() {
			w.WriteHeader(503)
			return
		}
		var d cti.Document
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			w.WriteHeader(400)
			return
		}
		c.mu.Lock()
		c.docs = append(c.docs, d)
		c.mu.Unlock()
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// last returns each user's last document, and how many documents had reason.
func (c *recordingCTI) last(reason string) (map[string]cti.Document, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, n := map[string]cti.Document{}, 0
	for _, d := range c.docs {
		m[d.UPN] = d
		if d.Reason == reason {
			n++
		}
	}
	return m, n
}

// deliveryTenant starts a simulated tenant of 10 users and writes a Presence.ini
// with one client-secret account polling it every second, the CTI at ctiURL (if
// any) and quick delivery retries.
func deliveryTenant(t *testing.T, ctiURL string) (*graphsim.Server, string) {
	t.Helper()
	sim := testkit.StartSim(t, graphsim.Options{Users: 10})
	return sim, testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100, Extra: httpSection(ctiURL) + `[Delivery]
RetryMin = 100ms
RetryMax = 1s
[Mapping]
Stale = unknown | closed | unknown | Teams unreachable
`})
}

func httpSection(url string) string {
	if url == "" {
		return ""
	}
	return "[HTTP]\nURL = " + url + "\n"
}

func startWith(t *testing.T, path string, tweak func(*config.Config)) *running {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(cfg)
	}
	r := &running{sink: &recordingSink{}, logs: &testkit.Buffer{}}
	r.app, err = Open(Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r.stop = func() {
		if cancel != nil {
			cancel()
			<-done
			r.app.Close()
			cancel = nil
		}
	}
	t.Cleanup(r.stop)
	go func() { done <- r.app.Run(ctx) }()
	return r
}

// Teams -> presencebridge -> HTTP CTI: first sightings, a change, the stale policy
// and its recovery, sync-all, a restart with states pending while the CTI was down,
// and a user leaving the users file.
func TestDeliveryToHTTPTarget(t *testing.T) {
	c := newRecordingCTI(t)
	sim, path := deliveryTenant(t, c.srv.URL)
	staleFast := func(cfg *config.Config) { cfg.Delivery.StaleAfter = 2 * time.Second }
	r := startWith(t, path, staleFast)

	waitFor(t, "every user's first state at the CTI", func() bool { m, _ := c.last(""); return len(m) == 10 }, r)
	upn := sim.Users()[3].UPN
	act := setOther(t, sim, upn)
	waitFor(t, "the change at the CTI", func() bool { m, _ := c.last(""); return m[upn].Teams.Activity == act }, r)
	if d, _ := c.last(""); d[upn].SIPURI != "sip:1003@pbx.example" || d[upn].Reason != "change" || d[upn].State == "" {
		t.Errorf("document = %+v", d[upn])
	}

	// Graph fails: after StaleAfter every user is shown stale, then live again.
	sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 503, Count: 1 << 20})
	waitFor(t, "stale states", func() bool { _, n := c.last("stale"); return n == 10 }, r)
	if m, _ := c.last(""); m[upn].Note != "Teams unreachable" || m[upn].Basic != "closed" {
		t.Errorf("stale document = %+v, want the [Mapping] Stale rule", m[upn])
	}
	if st := r.account(t, "main"); st.StaleSince.IsZero() {
		t.Errorf("status does not show the stale episode: %+v", st)
	}
	sim.ClearFaults()
	waitFor(t, "live states again", func() bool {
		m, _ := c.last("")
		for _, d := range m {
			if d.Reason == "stale" {
				return false
			}
		}
		return true
	}, r)
	if m, _ := c.last(""); m[upn].Teams.Activity != act {
		t.Errorf("after recovery %s shows %+v, want %s", upn, m[upn], act)
	}

	// sync-all sends everyone again.
	rep, err := r.app.SyncAll(context.Background())
	if err != nil || rep.Queued != 10 {
		t.Fatalf("SyncAll = %+v, %v", rep, err)
	}
	waitFor(t, "sync-all", func() bool { _, n := c.last("sync"); return n >= 20 }, r)

	// The CTI goes down, a change is queued, presencebridge stops; after a restart
	// with the CTI back the change arrives.
	c.down.Store(true)
	upn2 := sim.Users()[5].UPN
	act2 := setOther(t, sim, upn2)
	waitFor(t, "the change to be queued", func() bool { return r.app.Pending("http") > 0 }, r)
	r.stop()
	c.down.Store(false)

	// upn (user 3) leaves the users file meanwhile.
	us := sim.Users()
	testkit.WriteSimUsers(t, filepath.Dir(path), append(append([]graphsim.User{}, us[:3]...), us[4:]...))
	r = startWith(t, path, staleFast)
	waitFor(t, "the pending change after the restart", func() bool { m, _ := c.last(""); return m[upn2].Teams.Activity == act2 }, r)
	waitFor(t, "the departed user's removal", func() bool { m, _ := c.last(""); return m[upn].Reason == "remove" }, r)
	rep2, err := r.app.Presence(context.Background(), upn2)
	if err != nil || len(rep2.Delivered) != 1 || rep2.Delivered[0].Target != "http" || rep2.Delivered[0].At.IsZero() {
		t.Errorf("presence get shows delivered = %+v (err %v)", rep2.Delivered, err)
	}
}

// Teams -> presencebridge -> Kamailio: a change arrives at an independent watcher
// as PIDF; after a restart the kept ETag modifies the same publication.
func TestDeliveryToKamailio(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}})
	sim, path := deliveryTenant(t, "")
	raw, _ := os.ReadFile(path)
	ini := strings.Replace(string(raw), "[Delivery]", fmt.Sprintf("[SIP]\nServer = %s\nUsername = pb\nPassword = s3cret\n[Delivery]", k.UDP), 1)
	os.WriteFile(path, []byte(ini), 0o600)

	upn := sim.Users()[2].UPN // sip:1002@pbx.example in the users file
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := kamailio.Watch(ctx, k.UDP, "sip:1002@pbx.example")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := startWith(t, path, nil)
	waitFor(t, "every user published", func() bool {
		return r.app.Pending("sip") == 0 && r.app.Status(ctx).(StatusReport).Targets[0].Sent == 10
	}, r)
	act := setOther(t, sim, upn)
	want := map[string]string{"InACall": "In a call", "Away": "Away"}[act]
	if _, err := w.WaitFor(ctx, func(n kamailio.Notify) bool { return n.Note == want }); err != nil {
		t.Fatalf("%v\n%s", err, k.LogTail(20))
	}
	r.stop()

	r = startWith(t, path, nil)
	act2 := setOther(t, sim, upn)
	want2 := map[string]string{"InACall": "In a call", "Away": "Away"}[act2]
	var seen []string
	if _, err := w.WaitFor(ctx, func(n kamailio.Notify) bool { seen = append(seen, n.Raw); return n.Note == want2 }); err != nil {
		t.Logf("NOTIFY bodies after the restart:\n%s", strings.Join(seen, "\n----\n"))
		rep, _ := r.app.Presence(context.Background(), upn)
		st := r.app.Status(context.Background()).(StatusReport)
		t.Fatalf("after restart: %v (want %q)\nlog:\n%s\npresence: %+v\npolling: %+v\ntargets: %+v\nkamailio:\n%s", err, want2, r.logs.String(), rep, st.Accounts[0].Polling, st.Targets, k.LogTail(40))
	}
	if strings.Contains(r.logs.String(), "s3cret") {
		t.Error("the SIP password reached the log")
	}
}
