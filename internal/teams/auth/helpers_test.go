package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

const tokenPath = "POST /{tenant}/oauth2/v2.0/token"

// startSim runs a simulated tenant (real TLS on loopback) for the test, with 5
// users unless opts say otherwise.
func startSim(t *testing.T, opts graphsim.Options) *graphsim.Server {
	t.Helper()
	if opts.Users == 0 {
		opts.Users = 5
	}
	return testkit.StartSim(t, opts)
}

// openStore opens the state file at path and closes it after the test (a second
// Close after a test closed it itself is harmless).
func openStore(t *testing.T, path string) *store.DB {
	t.Helper()
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func tempStore(t *testing.T) (*store.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "presencebridge.db")
	return openStore(t, path), path
}

// fixture is one account's Authenticator against a simulated tenant.
type fixture struct {
	s     *graphsim.Server
	a     *Authenticator
	logs  *testkit.Buffer
	clock *clock.Fake
}

// newAuth builds an Authenticator for the sim; edit adjusts the options.
func newAuth(t *testing.T, s *graphsim.Server, db *store.DB, mode Mode, edit func(*Options)) fixture {
	t.Helper()
	logs := &testkit.Buffer{}
	fc := clock.NewFake(t0)
	o := Options{
		AccountID: "contoso",
		TenantID:  s.TenantID(),
		Authority: s.Authority(),
		GraphURL:  s.GraphURL(),
		Mode:      mode,
		// A client trusting only the simulator's CA, as the transport package
		// builds one from [Proxy] CAFile.
		HTTPClient: s.Client(),
		Store:      db,
		Clock:      fc,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	switch mode {
	case ModeDeviceCode:
		o.ClientID = graphsim.DefaultPublicApp
	case ModeSecret:
		o.ClientID, o.ClientSecret = graphsim.DefaultDaemonApp, graphsim.DefaultDaemonSecret
	}
	if edit != nil {
		edit(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return fixture{s: s, a: a, logs: logs, clock: fc}
}

var userCodeInMessage = regexp.MustCompile(`enter the code ([A-Z0-9]{9})`)

// login runs the device-code sign-in and approves it as upn from show, the way a
// user would after reading the message. It returns the identity and the message.
func (f fixture) login(t *testing.T, upn string) (Identity, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var msg string
	id, err := f.a.Login(ctx, func(m string) {
		msg = m
		if n := f.s.ApproveDeviceCodes(upn); n != 1 {
			t.Errorf("ApproveDeviceCodes approved %d codes, want 1", n)
		}
	})
	return id, msg, err
}

func (f fixture) mustLogin(t *testing.T, upn string) Identity {
	t.Helper()
	id, msg, err := f.login(t, upn)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if !userCodeInMessage.MatchString(msg) || !strings.Contains(msg, f.s.URL()) {
		t.Errorf("show() got %q, want Microsoft's message with the verification URL and the user code", msg)
	}
	return id
}

func (f fixture) token(t *testing.T) string {
	t.Helper()
	tok, err := f.a.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

// graphAccepts asserts Graph (the simulator) accepts the token for a presence read.
func graphAccepts(t *testing.T, s *graphsim.Server, tok string) {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"ids": {s.Users()[0].ID}})
	req, err := http.NewRequest(http.MethodPost, s.GraphURL()+"/communications/getPresencesByUserId", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Graph refused the token: HTTP %d", resp.StatusCode)
	}
}

func tokenCalls(s *graphsim.Server) int { return s.Stats().Endpoints[tokenPath] }

// storedRefreshTokens digs the refresh tokens out of the account's cache blob, to
// check they never leak.
func storedRefreshTokens(t *testing.T, db *store.DB, accountID string) []string {
	t.Helper()
	raw, err := db.GetRaw(store.BucketTokens, cacheKey(accountID))
	if err != nil || raw == nil {
		t.Fatalf("token blob of %s: %v (present %v)", accountID, err, raw != nil)
	}
	var c struct {
		RefreshToken map[string]struct {
			Secret string `json:"secret"`
		}
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rt := range c.RefreshToken {
		out = append(out, rt.Secret)
	}
	if len(out) == 0 {
		t.Fatal("no refresh token in the cache blob")
	}
	return out
}
