package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

func TestDeviceCodeSignInSurvivesRestart(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	db, path := tempStore(t)
	f := newAuth(t, s, db, ModeDeviceCode, nil)
	upn := s.Users()[1].UPN

	if st := f.a.Status(); st.State != StateUnknown || st.Username != "" {
		t.Errorf("status before any sign-in = %+v, want unknown and no user", st)
	}
	id := f.mustLogin(t, upn)
	if id.Username != upn || id.TenantID != s.TenantID() || time.Until(id.ExpiresOn) < 50*time.Minute {
		t.Errorf("identity = %+v, want %s in tenant %s with a token for about an hour", id, upn, s.TenantID())
	}
	graphAccepts(t, s, f.token(t))
	if st := f.a.Status(); st.State != StateOK || st.Username != upn || st.ExpiresOn.IsZero() || st.LastError != "" {
		t.Errorf("status after sign-in = %+v, want ok as %s", st, upn)
	}

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file holding the tokens has mode %o, want 600", perm)
	}

	// Restart: the file is closed and opened again by a new process's Authenticator.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2 := openStore(t, path)
	before := s.Stats().Endpoints
	f2 := newAuth(t, s, db2, ModeDeviceCode, nil)
	if st := f2.a.Status(); st.State != StateUnknown || st.Username != upn {
		t.Errorf("status after restart, before Token = %+v, want unknown with the stored user %s", st, upn)
	}
	graphAccepts(t, s, f2.token(t))
	after := s.Stats().Endpoints
	if after["POST /{tenant}/oauth2/v2.0/devicecode"] != before["POST /{tenant}/oauth2/v2.0/devicecode"] {
		t.Error("a second device-code sign-in happened after the restart")
	}
	if after[tokenPath] != before[tokenPath] {
		t.Errorf("token endpoint called %d times after the restart, want 0 (the access token is cached in the store)", after[tokenPath]-before[tokenPath])
	}
	if st := f2.a.Status(); st.State != StateOK || st.Username != upn {
		t.Errorf("status after restart = %+v, want ok as %s", st, upn)
	}
}

// With access tokens that MSAL will not reuse (expiring within 5 minutes), every
// Token call redeems the refresh token; with strict rotation the old refresh token
// dies at once, so a restart works only if each rotated one was stored.
func TestSilentRefreshStoresRotatedRefreshToken(t *testing.T) {
	s := startSim(t, graphsim.Options{AccessTokenLifetime: 2 * time.Minute, StrictRefreshRotation: true})
	db, path := tempStore(t)
	f := newAuth(t, s, db, ModeDeviceCode, nil)
	f.mustLogin(t, s.Users()[0].UPN)
	firstRT := storedRefreshTokens(t, db, "contoso")

	calls := tokenCalls(s)
	seen := map[string]bool{}
	for i := range 3 {
		tok := f.token(t)
		if seen[tok] {
			t.Fatalf("Token call %d returned an access token seen before; want a refreshed one", i+1)
		}
		seen[tok] = true
		graphAccepts(t, s, tok)
	}
	if got := tokenCalls(s) - calls; got != 3 {
		t.Errorf("token endpoint saw %d requests for 3 Token calls, want 3 refresh grants", got)
	}
	if rt := storedRefreshTokens(t, db, "contoso"); rt[0] == firstRT[0] {
		t.Error("the stored refresh token was not replaced by the rotated one")
	}

	db.Close()
	f2 := newAuth(t, s, openStore(t, path), ModeDeviceCode, nil)
	graphAccepts(t, s, f2.token(t))
}

func TestRevokedSignInNeedsLoginLoggedOnce(t *testing.T) {
	s := startSim(t, graphsim.Options{AccessTokenLifetime: 2 * time.Minute})
	db, _ := tempStore(t)
	f := newAuth(t, s, db, ModeDeviceCode, nil)
	upn := s.Users()[0].UPN
	f.mustLogin(t, upn)
	f.token(t)
	rts := storedRefreshTokens(t, db, "contoso")
	if n := s.RevokeRefreshTokens(); n == 0 {
		t.Fatal("nothing revoked")
	}

	calls := tokenCalls(s)
	var lastErr error
	for i := range 4 {
		if i > 0 {
			f.clock.Advance(needsLoginRecheck) // each call asks the token endpoint again
		}
		_, err := f.a.Token(context.Background())
		var nl *NeedsLoginError
		if !errors.As(err, &nl) {
			t.Fatalf("Token call %d after revocation: err = %v, want *NeedsLoginError", i+1, err)
		}
		if nl.Account != "contoso" || !strings.Contains(nl.Reason, "AADSTS70008") {
			t.Errorf("NeedsLoginError = %+v, want account contoso and reason AADSTS70008", nl)
		}
		lastErr = err
	}
	if got := tokenCalls(s) - calls; got != 4 {
		t.Errorf("token endpoint saw %d refresh attempts, want 4 (one per Token call after each re-check interval)", got)
	}
	// Within the re-check interval the dead refresh token is not sent again.
	if _, err := f.a.Token(context.Background()); !errors.As(err, new(*NeedsLoginError)) {
		t.Fatalf("held Token: err = %v, want *NeedsLoginError", err)
	}
	if got := tokenCalls(s) - calls; got != 4 {
		t.Errorf("a Token call within the re-check interval reached the token endpoint")
	}

	msg := lastErr.Error()
	if !strings.HasPrefix(msg, `account "contoso": sign-in needed: invalid_grant: AADSTS70008: `) ||
		!strings.HasSuffix(msg, "; run: presencebridge login --account contoso") {
		t.Errorf("error text = %q, want the account, the AADSTS reason and the login command", msg)
	}
	if n := f.logs.Count("Sign-in needed"); n != 1 {
		t.Errorf("needs-login logged %d times over 5 Token calls, want once:\n%s", n, f.logs)
	}
	if !strings.Contains(f.logs.String(), "fix=\"presencebridge login --account contoso\"") {
		t.Errorf("log does not name the fix:\n%s", f.logs)
	}
	st := f.a.Status()
	if st.State != StateNeedsLogin || !strings.Contains(st.LastError, "AADSTS70008") || !st.ExpiresOn.IsZero() {
		t.Errorf("status = %+v, want needs-login with the AADSTS70008 reason", st)
	}
	for _, rt := range rts {
		for where, text := range map[string]string{"error": msg, "log": f.logs.String(), "status": st.LastError} {
			if strings.Contains(text, rt) {
				t.Errorf("the refresh token appears in the %s", where)
			}
		}
	}

	// Signing in again brings the account back at once, and a later failure is
	// logged again.
	f.mustLogin(t, upn)
	if st := f.a.Status(); st.State != StateOK || st.LastError != "" {
		t.Errorf("status after new sign-in = %+v, want ok", st)
	}
	graphAccepts(t, s, f.token(t))
	graphAccepts(t, s, f.token(t)) // a refresh with the new refresh token
	s.RevokeRefreshTokens()
	for range 2 {
		if _, err := f.a.Token(context.Background()); !errors.As(err, new(*NeedsLoginError)) {
			t.Fatalf("Token after second revocation: err = %v, want *NeedsLoginError", err)
		}
	}
	if n := f.logs.Count("Sign-in needed"); n != 2 {
		t.Errorf("needs-login logged %d times in total, want 2 (once per episode)", n)
	}
}

func TestAccountsInOneStoreAreSeparate(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	db, _ := tempStore(t)
	a := newAuth(t, s, db, ModeDeviceCode, func(o *Options) { o.AccountID = "north" })
	b := newAuth(t, s, db, ModeDeviceCode, func(o *Options) { o.AccountID = "south" })
	northUPN, southUPN := s.Users()[0].UPN, s.Users()[1].UPN

	a.mustLogin(t, northUPN)
	_, err := b.a.Token(context.Background())
	var nl *NeedsLoginError
	if !errors.As(err, &nl) || nl.Account != "south" {
		t.Fatalf("Token of the account that never signed in: err = %v, want *NeedsLoginError for south", err)
	}
	if want := "; run: presencebridge login --account south"; !strings.HasSuffix(err.Error(), want) {
		t.Errorf("error %q does not end with %q", err, want)
	}
	if st := b.a.Status(); st.State != StateNeedsLogin || st.Username != "" {
		t.Errorf("status of south = %+v, want needs-login with no user", st)
	}

	b.mustLogin(t, southUPN)
	a.token(t)
	b.token(t)
	if got := a.a.Status().Username; got != northUPN {
		t.Errorf("north is signed in as %s, want %s", got, northUPN)
	}
	if got := b.a.Status().Username; got != southUPN {
		t.Errorf("south is signed in as %s, want %s", got, southUPN)
	}
	var keys []string
	db.ForEach(store.BucketTokens, func(k string, _ []byte) error { keys = append(keys, k); return nil })
	if strings.Join(keys, ",") != "north|,south|" {
		t.Errorf("token cache keys = %v, want [north| south|]", keys)
	}
}

func TestDeviceCodeWrongUserRefused(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	db, _ := tempStore(t)
	want, other := s.Users()[0].UPN, s.Users()[3].UPN
	f := newAuth(t, s, db, ModeDeviceCode, func(o *Options) { o.Username = strings.ToUpper(want) })

	_, _, err := f.login(t, other)
	if err == nil || !strings.Contains(err.Error(), "signed in as "+other) || !strings.Contains(err.Error(), "sign in as "+strings.ToUpper(want)) {
		t.Fatalf("Login as the wrong user: err = %v, want it to name both accounts", err)
	}
	if _, err := f.a.Token(context.Background()); !errors.As(err, new(*NeedsLoginError)) {
		t.Fatalf("Token after a refused sign-in: err = %v, want *NeedsLoginError (the wrong account is not kept)", err)
	}
	id := f.mustLogin(t, want) // the expected user, case aside
	if id.Username != want {
		t.Errorf("signed in as %s, want %s", id.Username, want)
	}
	graphAccepts(t, s, f.token(t))
}

func TestDeviceCodeTransientFailureIsNotNeedsLogin(t *testing.T) {
	s := startSim(t, graphsim.Options{AccessTokenLifetime: 2 * time.Minute})
	db, _ := tempStore(t)
	f := newAuth(t, s, db, ModeDeviceCode, nil)
	f.mustLogin(t, s.Users()[0].UPN)

	s.InjectFault(graphsim.Fault{Path: "/oauth2/v2.0/token", Status: 503})
	_, err := f.a.Token(context.Background())
	if err == nil || errors.As(err, new(*NeedsLoginError)) || errors.As(err, new(*CredentialsError)) {
		t.Fatalf("Token during a 503: err = %v, want an ordinary error", err)
	}
	if !strings.Contains(err.Error(), "temporarily_unavailable") {
		t.Errorf("error %q does not say what the server answered", err)
	}
	if st := f.a.Status(); st.State != StateError || st.LastError == "" {
		t.Errorf("status during a 503 = %+v, want error with the cause", st)
	}
	if strings.Contains(f.logs.String(), "level=ERROR") {
		t.Errorf("a transient failure was logged by auth (its caller logs it):\n%s", f.logs)
	}
	f.token(t)
	if st := f.a.Status(); st.State != StateOK {
		t.Errorf("status after recovery = %+v, want ok", st)
	}

	// A caller that gives up (shutdown) gets its context error back and does not
	// turn a working sign-in into an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.a.Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Token with a cancelled context: err = %v, want context.Canceled", err)
	}
	if st := f.a.Status(); st.State != StateOK {
		t.Errorf("status after a cancelled Token = %+v, want still ok", st)
	}
}

func TestClientSecret(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{"right secret", graphsim.DefaultDaemonSecret, true},
		{"wrong secret", "not-the-secret", false},
		{"wrong secret shaped like Entra's", "Qx48Q~wrongWrongWrong0123456789abcdefABCD", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := tempStore(t)
			f := newAuth(t, s, db, ModeSecret, func(o *Options) { o.ClientSecret = tt.secret })
			id, loginErr := f.a.Login(context.Background(), func(string) { t.Error("app sign-in showed a prompt") })
			if tt.ok {
				if loginErr != nil {
					t.Fatalf("Login: %v", loginErr)
				}
				if id.Username != "" || id.TenantID != s.TenantID() || id.ExpiresOn.IsZero() {
					t.Errorf("identity = %+v, want the tenant and an expiry, no user", id)
				}
				calls := tokenCalls(s)
				tok := f.token(t)
				graphAccepts(t, s, tok)
				if again := f.token(t); again != tok {
					t.Error("second Token did not reuse the cached app token")
				}
				if got := tokenCalls(s) - calls; got != 1 {
					t.Errorf("token endpoint saw %d requests for two Token calls, want 1", got)
				}
				if st := f.a.Status(); st.State != StateOK {
					t.Errorf("status = %+v, want ok", st)
				}
				return
			}

			var ce *CredentialsError
			if !errors.As(loginErr, &ce) || !strings.Contains(loginErr.Error(), "AADSTS7000215") ||
				!strings.Contains(loginErr.Error(), "ClientSecret is wrong") {
				t.Fatalf("Login with a wrong secret: err = %v, want *CredentialsError naming AADSTS7000215 and ClientSecret", loginErr)
			}
			var errs []string
			for range 3 {
				_, err := f.a.Token(context.Background())
				if !errors.As(err, &ce) {
					t.Fatalf("Token with a wrong secret: err = %v, want *CredentialsError", err)
				}
				errs = append(errs, err.Error())
			}
			st := f.a.Status()
			if st.State != StateError || !strings.Contains(st.LastError, "AADSTS7000215") {
				t.Errorf("status = %+v, want error with AADSTS7000215", st)
			}
			if n := f.logs.Count("Sign-in refused"); n != 1 {
				t.Errorf("refused credentials logged %d times over 3 calls, want once:\n%s", n, f.logs)
			}
			for where, text := range map[string]string{"Login error": loginErr.Error(), "Token error": strings.Join(errs, "\n"),
				"log": f.logs.String(), "status": st.LastError} {
				if strings.Contains(text, tt.secret) {
					t.Errorf("the secret appears in the %s: %s", where, text)
				}
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	app, other := testkit.AppCertificate(t, "presencebridge"), testkit.AppCertificate(t, "not-registered")
	certPEM, keyPEM := app.CertPEM, app.KeyPEM
	s := startSim(t, graphsim.Options{Apps: []graphsim.App{{ClientID: "cert-app", CertPEM: certPEM}}})
	dir := t.TempDir()
	write := func(name string, parts ...[]byte) string {
		p := filepath.Join(dir, name)
		var b []byte
		for _, part := range parts {
			b = append(b, part...)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := write("both.pem", certPEM, keyPEM)
	certOnly, keyOnly := write("cert.pem", certPEM), write("key.pem", keyPEM)
	otherBoth := write("other.pem", other.CertPEM, other.KeyPEM)

	tests := []struct {
		name            string
		certFile, keyFN string
		wantErr         string
	}{
		{"certificate and key in one file", both, "", ""},
		{"certificate and key in two files", certOnly, keyOnly, ""},
		{"certificate the app does not know", otherBoth, "", "AADSTS700027"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := tempStore(t)
			f := newAuth(t, s, db, ModeCertificate, func(o *Options) {
				o.ClientID, o.CertificateFile, o.CertificateKeyFile = "cert-app", tt.certFile, tt.keyFN
			})
			id, err := f.a.Login(context.Background(), nil)
			if tt.wantErr != "" {
				if !errors.As(err, new(*CredentialsError)) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Login: err = %v, want *CredentialsError with %s", err, tt.wantErr)
				}
				if _, err := f.a.Token(context.Background()); !errors.As(err, new(*CredentialsError)) {
					t.Fatalf("Token: err = %v, want *CredentialsError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if id.TenantID != s.TenantID() {
				t.Errorf("identity tenant = %q, want %q", id.TenantID, s.TenantID())
			}
			graphAccepts(t, s, f.token(t))
		})
	}
}

// Renew drops the cached access token (MSAL would serve it for its whole hour)
// and fetches a new one from the refresh token; Refused makes a device-code
// account need a new sign-in, once, and the refused token is never served as a
// good one again.
func TestRenewAndRefused(t *testing.T) {
	s := startSim(t, graphsim.Options{})
	db, _ := tempStore(t)
	f := newAuth(t, s, db, ModeDeviceCode, nil)
	f.mustLogin(t, s.Users()[1].UPN)
	first := f.token(t)
	if again := f.token(t); again != first {
		t.Fatal("MSAL did not serve the cached token")
	}
	calls := tokenCalls(s)
	renewed, err := f.a.Renew(context.Background(), "")
	if err != nil || renewed == first || tokenCalls(s) != calls+1 {
		t.Fatalf("Renew = %v (same token: %v, token calls %d)", err, renewed == first, tokenCalls(s)-calls)
	}
	graphAccepts(t, s, renewed)

	err = f.a.Refused(renewed, "Graph answered 401 InvalidAuthenticationToken: the token is not accepted")
	var nl *NeedsLoginError
	if !errors.As(err, &nl) || f.a.Status().State != StateNeedsLogin || !strings.Contains(f.a.Status().LastError, "Graph refused a newly issued access token") {
		t.Fatalf("Refused = %v, status %+v", err, f.a.Status())
	}
	// After the needs-login re-check MSAL serves the same cached token: still refused.
	f.clock.Advance(needsLoginRecheck + time.Second)
	if _, err := f.a.Token(context.Background()); !errors.As(err, &nl) || f.a.Status().State != StateNeedsLogin {
		t.Fatalf("Token after the re-check = %v, status %+v; the refused token was served", err, f.a.Status())
	}
	if n := f.logs.Count("Sign-in needed"); n != 1 {
		t.Errorf("Sign-in needed logged %d times, want once:\n%s", n, f.logs.String())
	}
}
