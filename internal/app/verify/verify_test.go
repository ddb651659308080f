package verify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// tenant is a simulated tenant and a Presence.ini for it; edit changes the INI
// text and users the users file before verify runs.
type tenant struct {
	sim    *graphsim.Server
	dir    string
	secret string // the client secret as Presence.ini holds it: encrypted
	base   string // Presence.ini as testkit.WriteSimConfig wrote it
}

func newTenant(t *testing.T, apps []graphsim.App) *tenant {
	t.Helper()
	tn := &tenant{sim: testkit.StartSim(t, graphsim.Options{Users: 8, Apps: apps}), dir: t.TempDir()}
	var err error
	if tn.secret, err = secret.Encrypt("sim-secret", tn.dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(testkit.WriteSimConfig(t, tn.sim, testkit.SimConfig{Dir: tn.dir, ClientSecret: tn.secret}))
	if err != nil {
		t.Fatal(err)
	}
	tn.base = string(raw)
	return tn
}

// ini is the tenant's Presence.ini (one client-secret account "main") followed
// by extra.
func (tn *tenant) ini(extra string) string { return tn.base + extra }

func (tn *tenant) verify(t *testing.T, ini string) []Result {
	t.Helper()
	path := filepath.Join(tn.dir, "Presence.ini")
	if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	return Run(context.Background(), Options{ConfigPath: path})
}

// find returns the result of the first check whose name contains name.
func find(t *testing.T, rs []Result, name string) Result {
	t.Helper()
	for _, r := range rs {
		if strings.Contains(r.Check, name) {
			return r
		}
	}
	t.Fatalf("no check %q in %+v", name, rs)
	return Result{}
}

func expectFail(t *testing.T, rs []Result, check string, detail, fix []string) {
	t.Helper()
	r := find(t, rs, check)
	if r.Status != Fail {
		t.Fatalf("%s: %s (%s), want FAIL", check, r.Status, r.Detail)
	}
	for _, w := range detail {
		if !strings.Contains(r.Detail, w) {
			t.Errorf("%s detail %q lacks %q", check, r.Detail, w)
		}
	}
	for _, w := range fix {
		if !strings.Contains(r.Fix, w) {
			t.Errorf("%s fix %q lacks %q", check, r.Fix, w)
		}
	}
	if !Failed(rs) {
		t.Error("Failed() = false with a FAIL")
	}
}

var readAll = []string{"Presence.Read.All", "User.ReadBasic.All", "Application.Read.All"}

func TestAllPass(t *testing.T) {
	tn := newTenant(t, []graphsim.App{{ClientID: "presencebridge-daemon", Secret: "sim-secret", Roles: readAll}})
	rs := tn.verify(t, tn.ini(""))
	for _, r := range rs {
		if r.Status != Pass {
			t.Errorf("%s: %s %s (fix: %s)", r.Check, r.Status, r.Detail, r.Fix)
		}
	}
	if len(rs) < 7 {
		t.Errorf("only %d checks ran: %+v", len(rs), rs)
	}
}

func TestBadINI(t *testing.T) {
	tn := newTenant(t, nil)
	rs := tn.verify(t, strings.Replace(tn.ini(""), "ControlAddr = off", "ControlAddr = off\nIntervall = 5s", 1))
	expectFail(t, rs, "configuration", []string{`Presence.ini:3: unknown key "Intervall" in [General]`}, []string{"Presence.ini.example"})
	if len(rs) != 1 {
		t.Errorf("checks ran after a broken INI: %+v", rs)
	}
}

func TestUntrustedCA(t *testing.T) {
	tn := newTenant(t, nil)
	rs := tn.verify(t, strings.Replace(tn.ini(""), "CAFile = sim-ca.pem\n", "", 1))
	expectFail(t, rs, "sign-in host", nil, []string{"unknown authority", "[Proxy] CAFile"})
}

func TestProxyAsksForCredentials(t *testing.T) {
	tn := newTenant(t, nil)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="corp"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
	}))
	defer proxy.Close()
	rs := tn.verify(t, strings.Replace(tn.ini(""), "URL = direct", "URL = "+proxy.URL, 1))
	expectFail(t, rs, "sign-in host", nil, []string{"407", "http://user:password@host:port"})
}

func TestMissingPermission(t *testing.T) {
	tn := newTenant(t, []graphsim.App{{ClientID: "presencebridge-daemon", Secret: "sim-secret", Roles: []string{"User.ReadBasic.All"}}})
	rs := tn.verify(t, tn.ini(""))
	expectFail(t, rs, "permissions", []string{"lacks Presence.Read.All"},
		[]string{"presencebridge-daemon", "Application permission Presence.Read.All", "grant admin consent"})
}

func TestUnknownUPN(t *testing.T) {
	tn := newTenant(t, nil)
	os.WriteFile(filepath.Join(tn.dir, "users.csv"), []byte("UPN,SIP URI\nghost@contoso.example,sip:9@pbx.example\n"+tn.sim.Users()[0].UPN+",sip:1@pbx.example\n"), 0o644)
	rs := tn.verify(t, tn.ini(""))
	expectFail(t, rs, "main: users", []string{"ghost@contoso.example"}, []string{"UPN column"})
}

func TestUnreachablePBX(t *testing.T) {
	tn := newTenant(t, nil)
	rs := tn.verify(t, tn.ini("[SIP]\nServer = 127.0.0.1:1\nTransport = tcp\nTimeout = 1s\n"))
	expectFail(t, rs, "SIP target", []string{"127.0.0.1:1"}, []string{"[SIP] Server"})
}

func TestOfflineSkipsTheNetwork(t *testing.T) {
	tn := newTenant(t, nil)
	ini := strings.Replace(tn.ini(""), tn.sim.URL(), "https://127.0.0.1:1", 2)
	path := filepath.Join(tn.dir, "Presence.ini")
	os.WriteFile(path, []byte(ini), 0o600)
	rs := Run(context.Background(), Options{ConfigPath: path, Offline: true})
	if Failed(rs) {
		t.Errorf("offline run failed: %+v", rs)
	}
	for _, r := range rs {
		if strings.Contains(r.Check, "host") {
			t.Errorf("offline ran a network check: %+v", r)
		}
	}
}

func TestClientSecretExpiry(t *testing.T) {
	soon := newTenant(t, []graphsim.App{{ClientID: "presencebridge-daemon", Secret: "sim-secret", Roles: readAll,
		SecretExpires: time.Now().Add(10*24*time.Hour + time.Hour)}})
	r := find(t, soon.verify(t, soon.ini("")), "client secret")
	if r.Status != Warn || !strings.Contains(r.Detail, "in 10 days") || !strings.Contains(r.Fix, "Certificates & secrets") {
		t.Errorf("secret expiring in 10 days: %+v", r)
	}
	gone := newTenant(t, []graphsim.App{{ClientID: "presencebridge-daemon", Secret: "sim-secret", Roles: readAll,
		SecretExpires: time.Now().Add(-time.Hour)}})
	expectFail(t, gone.verify(t, gone.ini("")), "client secret", []string{"expired"}, []string{"[Account.main] ClientSecret"})
	unread := newTenant(t, nil)
	r = find(t, unread.verify(t, unread.ini("")), "client secret")
	if r.Status != Warn || !strings.Contains(r.Detail, "Application.Read.All") {
		t.Errorf("without Application.Read.All: %+v", r)
	}
}

// TestOfflineStateFileIsAFolder: verify --offline fails a StateFile that is a
// folder (it passed, then run exited 1).
func TestOfflineStateFileIsAFolder(t *testing.T) {
	tn := newTenant(t, nil)
	os.Mkdir(filepath.Join(tn.dir, "state"), 0o700)
	path := filepath.Join(tn.dir, "Presence.ini")
	os.WriteFile(path, []byte(strings.Replace(tn.ini(""), "ControlAddr = off", "ControlAddr = off\nStateFile = state", 1)), 0o600)
	rs := Run(context.Background(), Options{ConfigPath: path, Offline: true})
	expectFail(t, rs, "configuration", []string{"[General] StateFile", "this is a folder"}, nil)
}

// A users file that lists nobody fails verify with the way to confirm it (the
// service refuses to start with it).
func TestHeaderOnlyUsersFile(t *testing.T) {
	tn := newTenant(t, nil)
	os.WriteFile(filepath.Join(tn.dir, "users.csv"), []byte("UPN,SIP URI\n"), 0o644)
	rs := tn.verify(t, tn.ini(""))
	expectFail(t, rs, "users file", []string{"lists no users"}, []string{"users apply --allow-mass-removal"})
}

// A users file that would take most users off the PBX fails verify too.
func TestMassRemovalFails(t *testing.T) {
	tn := newTenant(t, nil)
	db, err := store.Open(filepath.Join(tn.dir, "presencebridge.db"))
	if err != nil {
		t.Fatal(err)
	}
	var shown []delivery.Item
	for i, u := range tn.sim.Users() {
		shown = append(shown, delivery.Item{User: users.User{UPN: u.UPN, SIPURI: fmt.Sprintf("sip:%d@pbx.example", 1000+i)}, Reason: delivery.ReasonChange})
	}
	d := delivery.NewDispatcher(delivery.Options{Settings: delivery.Settings{BatchSize: 100, RetryMin: time.Second, RetryMax: time.Second}, Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{acceptAll{}}})
	d.Enqueue(context.Background(), shown)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	for d.Pending("cti") > 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	db.Close()
	os.WriteFile(filepath.Join(tn.dir, "users.csv"), []byte("UPN,SIP URI\n"+tn.sim.Users()[0].UPN+",sip:1000@pbx.example\n"), 0o644)
	rs := tn.verify(t, tn.ini(""))
	expectFail(t, rs, "users on the PBX", []string{"would withdraw the presence of 7 of the 8 users"}, []string{"users apply --allow-mass-removal"})
}

type acceptAll struct{}

func (acceptAll) Name() string { return "cti" }
func (acceptAll) Close() error { return nil }
func (acceptAll) Send(_ context.Context, items []delivery.Item) []error {
	return make([]error, len(items))
}
