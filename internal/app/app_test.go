package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// recordingSink keeps a copy of every change (the poller reuses its slice).
type recordingSink struct {
	mu      sync.Mutex
	changes []presence.Change
}

func (s *recordingSink) Deliver(_ context.Context, cs []presence.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes = append(s.changes, cs...)
	return nil
}

func (s *recordingSink) byUPN() map[string][]presence.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string][]presence.Change{}
	for _, c := range s.changes {
		m[c.User.UPN] = append(m[c.User.UPN], c)
	}
	return m
}

// twoAccountTenant starts a simulated tenant with users in two domains and writes a
// Presence.ini with two accounts: "people" (device code, contoso.example) and
// "daemon" (client secret, fabrikam.example).
func twoAccountTenant(t *testing.T, tweak ...func(*graphsim.Options)) (*graphsim.Server, string) {
	t.Helper()
	opts := graphsim.Options{
		Users: 20, Domains: []string{"contoso.example", "fabrikam.example"},
		DeviceCodeApproveAfter: 50 * time.Millisecond,
		AccessTokenLifetime:    2 * time.Minute, // under MSAL's 5-minute floor: every Token call refreshes
	}
	for _, f := range tweak {
		f(&opts)
	}
	sim := testkit.StartSim(t, opts)
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100, Accounts: `[Account.people]
TenantID = 4f1c3c57-0b5e-4d0e-9a55-3b1a7f0e2c11
ClientID = presencebridge-demo
Auth = devicecode
Username = presence.svc@contoso.example
Domains = contoso.example
[Account.daemon]
TenantID = 4f1c3c57-0b5e-4d0e-9a55-3b1a7f0e2c11
ClientID = presencebridge-daemon
Auth = secret
ClientSecret = sim-secret
Domains = fabrikam.example
`})
	return sim, path
}

type running struct {
	app  *App
	sink *recordingSink
	logs *testkit.Buffer
	stop func()
}

func start(t *testing.T, path string) *running {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{sink: &recordingSink{}, logs: &testkit.Buffer{}}
	r.app, err = Open(Options{Config: cfg, Sink: r.sink, Logger: slog.New(slog.NewTextHandler(r.logs, nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r.stop = func() {
		if cancel != nil {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			r.app.Close()
			cancel = nil
		}
	}
	t.Cleanup(r.stop)
	go func() { done <- r.app.Run(ctx) }()
	return r
}

func (r *running) account(t *testing.T, id string) AccountReport {
	t.Helper()
	for _, a := range r.app.Status(context.Background()).(StatusReport).Accounts {
		if a.ID == id {
			return a
		}
	}
	t.Fatalf("no account %q in status", id)
	return AccountReport{}
}

// waitFor polls cond for up to 20 s (the accounts poll every second).
func waitFor(t *testing.T, what string, cond func() bool, r ...*running) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	for _, r := range r {
		t.Logf("status: %+v\nlog:\n%s", r.app.Status(context.Background()), r.logs.String())
	}
	t.Fatalf("timed out waiting for %s", what)
}

// The whole read path through App: sign in once, poll two accounts on their own
// budgets, restart without signing in or re-emitting, then lose one account's
// sign-in and see it in status while the other account carries on.
func TestTwoAccountsSignInOnceSurviveRestartAndSurfaceDeadSignIn(t *testing.T) {
	sim, path := twoAccountTenant(t)

	// First run: the device-code account signs in once.
	r := start(t, path)
	var shown string
	id, err := r.app.Login(context.Background(), "people", func(msg string) { shown = msg })
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	if !strings.Contains(shown, "devicelogin") && !strings.Contains(shown, "code") {
		t.Errorf("login did not show the device-code message: %q", shown)
	}
	if id.Username != "presence.svc@contoso.example" {
		t.Errorf("signed in as %q", id.Username)
	}
	waitFor(t, "20 first sightings", func() bool { return len(r.sink.byUPN()) == 20 })
	for upn, cs := range r.sink.byUPN() {
		if len(cs) != 1 {
			t.Errorf("%s emitted %d times in a static tenant, want once", upn, len(cs))
		}
	}
	stats := sim.Stats()
	if stats.MaxInWindow["presencebridge-demo"] == 0 || stats.MaxInWindow["presencebridge-daemon"] == 0 {
		t.Errorf("each account should read with its own app registration: %v", stats.MaxInWindow)
	}
	r.stop()

	// Second run, same state file: no sign-in, nothing re-emitted, a change gets through.
	tokenCalls := sim.Stats().Endpoints
	r = start(t, path)
	waitFor(t, "both accounts to complete a cycle", func() bool {
		return r.account(t, "people").Polling.Cycles >= 1 && r.account(t, "daemon").Polling.Cycles >= 1
	})
	if st := r.account(t, "people").Sign; st.State != auth.StateOK || st.Username != "presence.svc@contoso.example" {
		t.Fatalf("after restart people's sign-in = %+v, want ok without a new login", st)
	}
	if n := sim.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/devicecode"] - tokenCalls["POST /{tenant}/oauth2/v2.0/devicecode"]; n != 0 {
		t.Errorf("restart asked for %d device codes", n)
	}
	if n := len(r.sink.byUPN()); n != 0 {
		t.Errorf("restart re-emitted %d users", n)
	}
	people := firstUser(t, sim, "contoso.example")
	peopleActivity := setOther(t, sim, people)
	waitFor(t, "the change", func() bool { return len(r.sink.byUPN()[people]) == 1 }, r)

	// The refresh token dies: status says so with the fix; the other account polls on;
	// people's users keep their last state.
	sim.RevokeRefreshTokens()
	waitFor(t, "needs-login", func() bool { return r.account(t, "people").Sign.State == auth.StateNeedsLogin })
	st := r.account(t, "people")
	if st.Sign.Fix != "presencebridge login --account people" || !strings.Contains(st.Sign.LastError, "AADSTS70008") {
		t.Errorf("status does not carry the cause and the fix: %+v", st.Sign)
	}
	before := r.account(t, "daemon").Polling.Cycles
	waitFor(t, "daemon to keep polling", func() bool { return r.account(t, "daemon").Polling.Cycles >= before+2 })
	daemonUser := firstUser(t, sim, "fabrikam.example")
	setOther(t, sim, daemonUser)
	waitFor(t, "the daemon account's change", func() bool { return len(r.sink.byUPN()[daemonUser]) == 1 })
	r.stop()
	if n := r.logs.Count("presencebridge login --account people"); n != 1 {
		t.Errorf("the fix was logged %d times, want once:\n%s", n, r.logs.String())
	}
	if strings.Contains(r.logs.String(), "sim-secret") {
		t.Error("the client secret reached the log")
	}
	db, err := store.Open(filepath.Join(filepath.Dir(path), "presencebridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if kept, found, err := poll.Kept(db).Last(people); err != nil || !found || string(kept.Activity) != peopleActivity {
		t.Errorf("people's last state after the sign-in died: %+v (found %v, err %v), want %s kept", kept, found, err, peopleActivity)
	}
}

// setOther changes upn's presence to Busy/InACall, or to Away/Away if it shows
// that already (the simulated tenant starts users in varied states), and returns
// the new activity.
func setOther(t *testing.T, sim *graphsim.Server, upn string) string {
	t.Helper()
	availability, activity := "Busy", "InACall"
	if a, act, _ := sim.Presence(upn); a == availability && act == activity {
		availability, activity = "Away", "Away"
	}
	if _, err := sim.SetPresence(upn, availability, activity); err != nil {
		t.Fatal(err)
	}
	return activity
}

func firstUser(t *testing.T, sim *graphsim.Server, domain string) string {
	t.Helper()
	for _, u := range sim.Users() {
		if strings.HasSuffix(u.UPN, "@"+domain) {
			return u.UPN
		}
	}
	t.Fatalf("no user in %s", domain)
	return ""
}
