package app

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	pushcti "github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// The state file in testdata/release-0.1.91 was written by the release before
// the compact format (version 0.1.91): `presencebridge simulate --users 12
// --rate 0 --pbx ... --kamailio 3`, `login` (device code, as
// presence.svc@contoso.example) and `run` for 12 s, delivering every user's state
// to the CTI and over SIP.

// oldLoginHost is the sign-in host the old run's token cache names.
const oldLoginHost = "127.0.0.1:36463"

// A state file of the previous release is upgraded when the service opens it,
// and the service carries on: no second sign-in (its refresh token still
// works), the ids and states it kept (no user shown as changed), every user's
// last delivered state re-asserted with its old seq and nothing else sent, the
// status report kept, and the file kept as it was beside the new one.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "presencebridge.db")
	unzip(t, "testdata/release-0.1.91/presencebridge.db.gz", path)
	raw, _ := os.ReadFile("testdata/release-0.1.91/users.csv")
	os.WriteFile(filepath.Join(dir, "users.csv"), raw, 0o644)

	// What the old file holds: its refresh token, and the seq of each user's
	// last delivery to the CTI (JSON records, still readable).
	old, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := old.Version(); v != 1 {
		t.Fatalf("the old release's file has version %d, want 1", v)
	}
	blob, _ := old.GetRaw(store.BucketTokens, "demo|")
	var cache struct {
		RefreshToken map[string]struct {
			Secret   string `json:"secret"`
			ClientID string `json:"client_id"`
		}
	}
	if err := json.Unmarshal(blob, &cache); err != nil || len(cache.RefreshToken) != 1 {
		t.Fatalf("token cache of the old file: %v, %d refresh tokens", err, len(cache.RefreshToken))
	}
	var grant graphsim.Grant
	for _, rt := range cache.RefreshToken {
		grant = graphsim.Grant{RefreshToken: rt.Secret, ClientID: rt.ClientID, UPN: "presence.svc@contoso.example"}
	}
	shown, err := delivery.BoltOutbox(old).Shown()
	if err != nil || len(shown) != 12 {
		t.Fatalf("the old file shows %d users, %v", len(shown), err)
	}
	oldSeq := map[string]uint64{}
	for upn := range shown {
		d, ok, err := delivery.BoltOutbox(old).Delivered("http", upn)
		if err != nil || !ok {
			t.Fatalf("old delivery to the CTI of %s: %v", upn, err)
		}
		oldSeq[upn] = d.Seq
	}
	old.Close()

	// The same simulated tenant (same users, ids and presence), knowing the old
	// refresh token.
	sim := testkit.StartSim(t, graphsim.Options{Users: 12, Seed: 1, Grants: []graphsim.Grant{grant}})
	// MSAL keys its cache by the sign-in host, which for the old run was the
	// simulated tenant's loopback port then (a real tenant's stays
	// login.microsoftonline.com): point the old cache at today's port.
	old, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	old.PutRaw(store.BucketTokens, "demo|", []byte(strings.ReplaceAll(string(blob), oldLoginHost, strings.TrimPrefix(sim.URL(), "https://"))))
	old.Close()
	cti := newRecordingCTI(t)
	os.WriteFile(filepath.Join(dir, "sim-ca.pem"), sim.CAPEM(), 0o644)
	ini := `[General]
ControlAddr = off
MetricsAddr = off
[Microsoft]
LoginURL = ` + sim.URL() + `
GraphURL = ` + sim.GraphURL() + `
[Proxy]
URL = direct
CAFile = sim-ca.pem
[Polling]
Interval = 1s
[Account.demo]
TenantID = ` + sim.TenantID() + `
ClientID = presencebridge-demo
Auth = devicecode
Username = presence.svc@contoso.example
[HTTP]
URL = ` + cti.srv.URL + "\n"
	os.WriteFile(filepath.Join(dir, "Presence.ini"), []byte(ini), 0o600)
	cfg, err := config.Load(filepath.Join(dir, "Presence.ini"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	a, err := Open(Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil)), Version: "test", RefuseMassRemoval: true})
	if err != nil {
		t.Fatalf("open the old release's state file: %v\n%s", err, logs)
	}
	if v := a.DB().Version(); v != store.Version {
		t.Errorf("version after the upgrade %d, want %d", v, store.Version)
	}
	if !strings.Contains(logs.String(), "State file upgraded to this release's format") || !strings.Contains(logs.String(), "from=1 to=2") {
		t.Errorf("the upgrade is not logged:\n%s", logs)
	}
	if _, err := os.Stat(path + ".v1"); err != nil {
		t.Errorf("the old file is not kept: %v", err)
	}
	if rep, found, err := a.StoredStatus(); err != nil || !found || rep.Version != "dev" || len(rep.Accounts) != 1 {
		t.Errorf("the old release's status report: %+v, %v, %v", rep, found, err)
	}
	a.DB().ForEach(store.BucketDelivered, func(k string, v []byte) error {
		if store.IsJSON(v) {
			t.Errorf("delivered/%q still JSON after the upgrade", k)
		}
		return nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	r := &running{app: a, logs: logs}
	waitFor(t, "three cycles and the re-assertion", func() bool {
		st := a.report()
		return st.Accounts[0].Polling.Cycles >= 3 && len(st.Targets) == 1 && !st.Targets[0].Reasserting && st.Targets[0].Reasserted == 12
	}, r)
	if st := a.report().Accounts[0].Sign; st.State != auth.StateOK {
		t.Errorf("sign-in after the upgrade: %+v\n%s", st, logs)
	}
	if n := sim.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/devicecode"]; n != 0 {
		t.Errorf("%d device-code sign-ins after the upgrade, want none", n)
	}
	time.Sleep(500 * time.Millisecond)
	cti.mu.Lock()
	docs := append([]pushcti.Document(nil), cti.docs...)
	cti.mu.Unlock()
	if len(docs) != 12 {
		t.Errorf("the CTI got %d documents after the upgrade, want each user's last state once", len(docs))
	}
	for _, d := range docs {
		if d.Reason != "sync" || d.Seq != oldSeq[d.UPN] {
			t.Errorf("after the upgrade %s got reason %q seq %d; want its last state re-asserted with seq %d", d.UPN, d.Reason, d.Seq, oldSeq[d.UPN])
		}
	}
}

func unzip(t *testing.T, from, to string) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// The legacy accounts bucket's records go to their owners' buckets; the
// pollers' old status (read by nobody) is dropped.
func TestUpgradeRecordMoves(t *testing.T) {
	for _, tc := range []struct{ key, bucket, to string }{
		{"_report", store.BucketStatus, statusKey},
		{"_stale.main", store.BucketStale, "main"},
		{"main", "", ""},
	} {
		b, k, _, err := upgradeRecord("accounts", []byte(tc.key), []byte(`"2026-11-23T08:00:00Z"`))
		if err != nil || b != tc.bucket || string(k) != tc.to {
			t.Errorf("accounts/%s goes to %q/%q (%v), want %q/%q", tc.key, b, k, err, tc.bucket, tc.to)
		}
	}
}
