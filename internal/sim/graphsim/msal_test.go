package graphsim_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// These tests drive the real MSAL for Go client against the simulator over TLS,
// the way internal/auth will.

var graphScopes = []string{"https://graph.microsoft.com/Presence.Read.All", "https://graph.microsoft.com/User.ReadBasic.All"}

const appScope = "https://graph.microsoft.com/.default"

func publicClient(t *testing.T, s *graphsim.Server, clientID string) public.Client {
	t.Helper()
	pc, err := public.New(clientID, public.WithAuthority(s.Authority()),
		public.WithInstanceDiscovery(false), public.WithHTTPClient(s.Client()))
	if err != nil {
		t.Fatalf("public.New: %v", err)
	}
	return pc
}

// graphOK asserts the token reads presence through Graph.
func graphOK(t *testing.T, s *graphsim.Server, tok string) {
	t.Helper()
	u := s.Users()[0]
	r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(u.ID))
	if r.Status != http.StatusOK {
		t.Fatalf("getPresencesByUserId with the MSAL token: %d %s", r.Status, r.Body)
	}
}

func TestMSALDeviceCodeApprovedByControl(t *testing.T) {
	s := start(t, graphsim.Options{Users: 5})
	pc := publicClient(t, s, graphsim.DefaultPublicApp)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	dc, err := pc.AcquireTokenByDeviceCode(ctx, graphScopes)
	if err != nil {
		t.Fatalf("AcquireTokenByDeviceCode: %v", err)
	}
	if dc.Result.UserCode == "" || !strings.HasPrefix(dc.Result.VerificationURL, s.URL()) || !strings.Contains(dc.Result.Message, dc.Result.UserCode) {
		t.Errorf("device code result = %+v, want a user code, a verification URL on the simulator and a message naming the code", dc.Result)
	}
	upn := s.Users()[2].UPN
	if n := s.ApproveDeviceCodes(upn); n != 1 {
		t.Fatalf("ApproveDeviceCodes = %d, want 1", n)
	}
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		t.Fatalf("AuthenticationResult: %v", err)
	}
	if res.Account.PreferredUsername != upn {
		t.Errorf("account = %q, want %q", res.Account.PreferredUsername, upn)
	}
	if res.Account.LocalAccountID != s.Users()[2].ID {
		t.Errorf("account oid = %q, want the user's object id %q", res.Account.LocalAccountID, s.Users()[2].ID)
	}
	if time.Until(res.ExpiresOn) < 50*time.Minute {
		t.Errorf("token expires %v, want about an hour from now", res.ExpiresOn)
	}
	graphOK(t, s, res.AccessToken)

	// The account is cached (id_token + client_info) and the token is served silently.
	accts, err := pc.Accounts(ctx)
	if err != nil || len(accts) != 1 {
		t.Fatalf("Accounts = %v, %v; want one account", accts, err)
	}
	silent, err := pc.AcquireTokenSilent(ctx, graphScopes, public.WithSilentAccount(accts[0]))
	if err != nil {
		t.Fatalf("AcquireTokenSilent: %v", err)
	}
	if silent.AccessToken != res.AccessToken {
		t.Error("AcquireTokenSilent did not return the cached access token: the reply's scope does not match what MSAL caches by")
	}

	// Claims make MSAL skip the cached access token and redeem the refresh token.
	tokenCalls := s.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/token"]
	refreshed, err := pc.AcquireTokenSilent(ctx, graphScopes, public.WithSilentAccount(accts[0]),
		public.WithClaims(`{"access_token":{"nbf":{"essential":true}}}`))
	if err != nil {
		t.Fatalf("AcquireTokenSilent with refresh: %v", err)
	}
	if refreshed.AccessToken == res.AccessToken {
		t.Error("refresh returned the old access token")
	}
	if got := s.Stats().Endpoints["POST /{tenant}/oauth2/v2.0/token"]; got != tokenCalls+1 {
		t.Errorf("token endpoint calls %d -> %d, want one refresh", tokenCalls, got)
	}
	graphOK(t, s, refreshed.AccessToken)

	// After revocation MSAL's refresh fails with invalid_grant.
	if n := s.RevokeRefreshTokens(); n < 1 {
		t.Fatalf("RevokeRefreshTokens = %d, want >= 1", n)
	}
	_, err = pc.AcquireTokenSilent(ctx, graphScopes, public.WithSilentAccount(accts[0]),
		public.WithClaims(`{"access_token":{"nbf":{"essential":true}}}`))
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), "AADSTS70008") {
		t.Fatalf("refresh after revocation: err = %v, want invalid_grant AADSTS70008", err)
	}
}

func TestMSALDeviceCodeAutoApproved(t *testing.T) {
	s := start(t, graphsim.Options{Users: 5, DeviceCodeApproveAfter: 100 * time.Millisecond})
	pc := publicClient(t, s, graphsim.DefaultPublicApp)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dc, err := pc.AcquireTokenByDeviceCode(ctx, graphScopes)
	if err != nil {
		t.Fatalf("AcquireTokenByDeviceCode: %v", err)
	}
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		t.Fatalf("AuthenticationResult: %v", err)
	}
	if want := "presence.svc@" + graphsim.DefaultDomain; res.Account.PreferredUsername != want {
		t.Errorf("auto-approved account = %q, want %q", res.Account.PreferredUsername, want)
	}
	graphOK(t, s, res.AccessToken)
}

func TestMSALDeviceCodeRefusedForConfidentialApp(t *testing.T) {
	s := start(t, graphsim.Options{Users: 1})
	pc := publicClient(t, s, graphsim.DefaultDaemonApp)
	_, err := pc.AcquireTokenByDeviceCode(context.Background(), graphScopes)
	if err == nil || !strings.Contains(err.Error(), "AADSTS7000218") {
		t.Fatalf("device code for a confidential app: err = %v, want AADSTS7000218", err)
	}
}

func TestMSALClientSecret(t *testing.T) {
	s := start(t, graphsim.Options{Users: 3})
	tests := []struct {
		name, secret, wantErr string
	}{
		{"right secret", graphsim.DefaultDaemonSecret, ""},
		{"wrong secret", "not-the-secret", "AADSTS7000215"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := confidential.NewCredFromSecret(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := confidential.New(s.Authority(), graphsim.DefaultDaemonApp, cred,
				confidential.WithInstanceDiscovery(false), confidential.WithHTTPClient(s.Client()))
			if err != nil {
				t.Fatalf("confidential.New: %v", err)
			}
			res, err := cc.AcquireTokenByCredential(context.Background(), []string{appScope})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.secret) {
					t.Error("the error echoes the secret")
				}
				return
			}
			if err != nil {
				t.Fatalf("AcquireTokenByCredential: %v", err)
			}
			graphOK(t, s, res.AccessToken)
			again, err := cc.AcquireTokenByCredential(context.Background(), []string{appScope})
			if err != nil || again.AccessToken != res.AccessToken {
				t.Errorf("second AcquireTokenByCredential: err %v, cached token reused %v", err, again.AccessToken == res.AccessToken)
			}
		})
	}
}

func TestMSALClientCertificate(t *testing.T) {
	app, other := testkit.AppCertificate(t, "presencebridge-cert"), testkit.AppCertificate(t, "someone-else")
	s := start(t, graphsim.Options{Users: 3, Apps: []graphsim.App{
		{ClientID: "cert-app", CertPEM: app.CertPEM},
		{ClientID: "secret-only", Secret: "x"},
	}})
	tests := []struct {
		name     string
		clientID string
		cert     *pki.KeyPair
		wantErr  string
	}{
		{"registered certificate", "cert-app", app, ""},
		{"unregistered certificate", "cert-app", other, "AADSTS700027"},
		{"app without certificate", "secret-only", app, "AADSTS700027"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := confidential.NewCredFromCert([]*x509.Certificate{tt.cert.Cert}, tt.cert.Key)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := confidential.New(s.Authority(), tt.clientID, cred,
				confidential.WithInstanceDiscovery(false), confidential.WithHTTPClient(s.Client()))
			if err != nil {
				t.Fatal(err)
			}
			res, err := cc.AcquireTokenByCredential(context.Background(), []string{appScope})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("AcquireTokenByCredential: %v", err)
			}
			graphOK(t, s, res.AccessToken)
		})
	}
}

func TestMSALAuthorityByLocalhost(t *testing.T) {
	// The discovery document follows the host the client used, so an authority
	// spelled with "localhost" passes MSAL's issuer check too.
	s := start(t, graphsim.Options{Users: 1})
	auth := strings.Replace(s.Authority(), "127.0.0.1", "localhost", 1)
	cred, _ := confidential.NewCredFromSecret(graphsim.DefaultDaemonSecret)
	cc, err := confidential.New(auth, graphsim.DefaultDaemonApp, cred,
		confidential.WithInstanceDiscovery(false), confidential.WithHTTPClient(s.Client()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.AcquireTokenByCredential(context.Background(), []string{appScope}); err != nil {
		t.Fatalf("AcquireTokenByCredential via localhost: %v", err)
	}
}
