package graphsim_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

func TestOpenIDConfiguration(t *testing.T) {
	s := start(t, graphsim.Options{Users: 1, Domains: []string{"contoso.example", "fabrikam.example"}})
	tests := []struct {
		tenant     string
		wantStatus int
	}{
		{s.TenantID(), http.StatusOK},
		{strings.ToUpper(s.TenantID()), http.StatusOK},
		{"fabrikam.example", http.StatusOK},
		{"00000000-0000-0000-0000-000000000000", http.StatusBadRequest},
	}
	for _, tt := range tests {
		r := do(t, s, http.MethodGet, "/"+tt.tenant+"/v2.0/.well-known/openid-configuration", "", nil)
		if r.Status != tt.wantStatus {
			t.Errorf("%s: status %d, want %d: %s", tt.tenant, r.Status, tt.wantStatus, r.Body)
			continue
		}
		if tt.wantStatus != http.StatusOK {
			var e oauthReply
			r.json(t, &e)
			if e.Error != "invalid_tenant" || !slices.Contains(e.ErrorCodes, 90002) {
				t.Errorf("%s: error %+v, want invalid_tenant AADSTS90002", tt.tenant, e)
			}
			continue
		}
		var doc map[string]any
		r.json(t, &doc)
		want := map[string]string{
			"issuer":                        s.URL() + "/" + s.TenantID() + "/v2.0",
			"token_endpoint":                s.URL() + "/" + tt.tenant + "/oauth2/v2.0/token",
			"device_authorization_endpoint": s.URL() + "/" + tt.tenant + "/oauth2/v2.0/devicecode",
			"authorization_endpoint":        s.URL() + "/" + tt.tenant + "/oauth2/v2.0/authorize",
		}
		for k, v := range want {
			if doc[k] != v {
				t.Errorf("%s: %s = %v, want %s", tt.tenant, k, doc[k], v)
			}
		}
	}
}

// deviceCode starts a device-code sign-in over plain HTTP and returns the code.
func deviceCode(t *testing.T, s *graphsim.Server, clientID string) (int, map[string]any) {
	t.Helper()
	r := postForm(t, s, "/"+s.TenantID()+"/oauth2/v2.0/devicecode", url.Values{
		"client_id": {clientID}, "scope": {"https://graph.microsoft.com/Presence.Read.All openid offline_access profile"}})
	var m map[string]any
	r.json(t, &m)
	return r.Status, m
}

func deviceForm(code string) url.Values {
	return url.Values{"grant_type": {"device_code"}, "client_id": {graphsim.DefaultPublicApp}, "device_code": {code}}
}

func refreshForm(clientID, rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {rt},
		"scope": {"https://graph.microsoft.com/Presence.Read.All openid offline_access profile"}}
}

func TestDeviceCodeFlow(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 3})
	status, dc := deviceCode(t, s, graphsim.DefaultPublicApp)
	if status != http.StatusOK {
		t.Fatalf("devicecode: %d %v", status, dc)
	}
	code, _ := dc["device_code"].(string)
	if code == "" || dc["user_code"] == "" || dc["expires_in"] != float64(900) {
		t.Fatalf("devicecode reply %v, want device_code, user_code, expires_in 900", dc)
	}

	st, o := token(t, s, deviceForm(code))
	if st != http.StatusBadRequest || o.Error != "authorization_pending" {
		t.Fatalf("before approval: %d %+v, want 400 authorization_pending", st, o)
	}
	upn := s.Users()[1].UPN
	if n := s.ApproveDeviceCodes(upn); n != 1 {
		t.Fatalf("ApproveDeviceCodes = %d, want 1", n)
	}
	st, o = token(t, s, deviceForm(code))
	if st != http.StatusOK {
		t.Fatalf("after approval: %d %+v", st, o)
	}
	if o.TokenType != "Bearer" || o.ExpiresIn != 3600 || o.RefreshToken == "" || o.AccessToken == "" {
		t.Errorf("token reply %+v, want Bearer, expires_in 3600, access and refresh tokens", o)
	}
	if !strings.Contains(o.Scope, "Presence.Read.All") {
		t.Errorf("scope %q does not echo the requested scope", o.Scope)
	}
	ci, err := base64.RawURLEncoding.DecodeString(o.ClientInfo)
	if err != nil {
		t.Fatalf("client_info %q is not unpadded base64url: %v", o.ClientInfo, err)
	}
	var cinfo map[string]string
	if err := json.Unmarshal(ci, &cinfo); err != nil || cinfo["uid"] != s.Users()[1].ID || cinfo["utid"] != s.TenantID() {
		t.Errorf("client_info = %s, want uid %s utid %s", ci, s.Users()[1].ID, s.TenantID())
	}
	idc := jwtClaims(t, o.IDToken)
	if idc["preferred_username"] != upn || idc["oid"] != s.Users()[1].ID || idc["tid"] != s.TenantID() || idc["aud"] != graphsim.DefaultPublicApp {
		t.Errorf("id_token claims %v", idc)
	}
	atc := jwtClaims(t, o.AccessToken)
	if atc["scp"] != "Presence.Read.All Presence.ReadWrite User.ReadBasic.All" || atc["appid"] != graphsim.DefaultPublicApp || atc["oid"] != s.Users()[1].ID {
		t.Errorf("access token claims %v", atc)
	}
	if exp, _ := atc["exp"].(float64); int64(exp) != t0.Add(time.Hour).Unix() {
		t.Errorf("access token exp %v, want fake now + 1h", atc["exp"])
	}

	// A device code is redeemed once.
	if st, o := token(t, s, deviceForm(code)); st != http.StatusBadRequest || o.Error != "invalid_grant" {
		t.Errorf("second redemption: %d %+v, want invalid_grant", st, o)
	}

	// An unapproved code expires after 15 minutes of the injected clock.
	_, dc2 := deviceCode(t, s, graphsim.DefaultPublicApp)
	fc.Advance(15 * time.Minute)
	if st, o := token(t, s, deviceForm(dc2["device_code"].(string))); st != http.StatusBadRequest || o.Error != "expired_token" {
		t.Errorf("expired code: %d %+v, want expired_token", st, o)
	}
	if n := s.ApproveDeviceCodes(upn); n != 0 {
		t.Errorf("ApproveDeviceCodes after expiry = %d, want 0", n)
	}
}

func TestDeviceCodeApproveAfterUsesClock(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 1, DeviceCodeApproveAfter: 10 * time.Second, DeviceCodeUPN: "svc@contoso.example"})
	_, dc := deviceCode(t, s, graphsim.DefaultPublicApp)
	code := dc["device_code"].(string)
	if st, o := token(t, s, deviceForm(code)); st != http.StatusBadRequest || o.Error != "authorization_pending" {
		t.Fatalf("before ApproveAfter: %d %+v, want authorization_pending", st, o)
	}
	fc.Advance(10 * time.Second)
	st, o := token(t, s, deviceForm(code))
	if st != http.StatusOK {
		t.Fatalf("after ApproveAfter: %d %+v", st, o)
	}
	if c := jwtClaims(t, o.IDToken); c["preferred_username"] != "svc@contoso.example" {
		t.Errorf("auto-approved as %v, want svc@contoso.example", c["preferred_username"])
	}
}

func TestApproveDeviceCodesUnknownDomain(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 1})
	deviceCode(t, s, graphsim.DefaultPublicApp)
	if n := s.ApproveDeviceCodes("mallory@evil.example"); n != 0 {
		t.Errorf("approved %d codes as a user outside the tenant, want 0", n)
	}
	if n := s.ApproveDeviceCodes("Presence.Svc@Contoso.Example"); n != 1 {
		t.Errorf("approved %d codes as a service account of the tenant's domain, want 1", n)
	}
}

// signIn completes a device-code sign-in and returns the token reply.
func signIn(t *testing.T, s *graphsim.Server) oauthReply {
	t.Helper()
	_, dc := deviceCode(t, s, graphsim.DefaultPublicApp)
	s.ApproveDeviceCodes(s.Users()[0].UPN)
	st, o := token(t, s, deviceForm(dc["device_code"].(string)))
	if st != http.StatusOK {
		t.Fatalf("sign in: %d %+v", st, o)
	}
	return o
}

func TestRefreshToken(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2})
	first := signIn(t, s)

	fc.Advance(2 * time.Hour) // the access token has expired on the injected clock
	if r := do(t, s, http.MethodGet, "/v1.0/users/"+s.Users()[0].ID+"/presence", first.AccessToken, nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("expired access token: %d, want 401", r.Status)
	}
	st, second := token(t, s, refreshForm(graphsim.DefaultPublicApp, first.RefreshToken))
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %+v", st, second)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Error("refresh did not rotate the refresh token")
	}
	if second.IDToken == "" || second.ClientInfo == "" {
		t.Error("refresh reply lacks id_token or client_info")
	}
	if r := do(t, s, http.MethodGet, "/v1.0/users/"+s.Users()[0].ID+"/presence", second.AccessToken, nil); r.Status != http.StatusOK {
		t.Fatalf("refreshed access token: %d %s", r.Status, r.Body)
	}
	// Entra ID keeps an old refresh token valid after rotation.
	if st, o := token(t, s, refreshForm(graphsim.DefaultPublicApp, first.RefreshToken)); st != http.StatusOK {
		t.Errorf("old refresh token after rotation: %d %+v, want 200", st, o)
	}

	tests := []struct {
		name, clientID, rt string
		wantCode           int
	}{
		{"other client", graphsim.DefaultDaemonApp, second.RefreshToken, 70000},
		{"made up", graphsim.DefaultPublicApp, "not-a-token", 9002313},
	}
	for _, tt := range tests {
		st, o := token(t, s, refreshForm(tt.clientID, tt.rt))
		if st != http.StatusBadRequest || o.Error != "invalid_grant" || !slices.Contains(o.ErrorCodes, tt.wantCode) {
			t.Errorf("%s: %d %+v, want 400 invalid_grant %d", tt.name, st, o, tt.wantCode)
		}
	}

	if n := s.RevokeRefreshTokens(); n != 3 {
		t.Errorf("RevokeRefreshTokens = %d, want 3 (two rotations plus the first)", n)
	}
	st, o := token(t, s, refreshForm(graphsim.DefaultPublicApp, second.RefreshToken))
	if st != http.StatusBadRequest || o.Error != "invalid_grant" || !slices.Contains(o.ErrorCodes, 70008) || !strings.HasPrefix(o.Description, "AADSTS70008:") {
		t.Errorf("revoked: %d %+v, want 400 invalid_grant AADSTS70008", st, o)
	}
	if strings.Contains(o.Description, second.RefreshToken) {
		t.Error("the error echoes the refresh token")
	}
	// Access tokens already issued stay valid until they expire.
	if r := do(t, s, http.MethodGet, "/v1.0/users/"+s.Users()[0].ID+"/presence", second.AccessToken, nil); r.Status != http.StatusOK {
		t.Errorf("access token after revocation: %d, want 200", r.Status)
	}
}

func TestRefreshTokenLifetimeAndStrictRotation(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 1, StrictRefreshRotation: true, RefreshTokenLifetime: 24 * time.Hour})
	first := signIn(t, s)
	st, second := token(t, s, refreshForm(graphsim.DefaultPublicApp, first.RefreshToken))
	if st != http.StatusOK {
		t.Fatalf("refresh: %d %+v", st, second)
	}
	if st, o := token(t, s, refreshForm(graphsim.DefaultPublicApp, first.RefreshToken)); st != http.StatusBadRequest || o.Error != "invalid_grant" {
		t.Errorf("strict rotation, old token: %d %+v, want invalid_grant", st, o)
	}
	fc.Advance(25 * time.Hour)
	if st, o := token(t, s, refreshForm(graphsim.DefaultPublicApp, second.RefreshToken)); st != http.StatusBadRequest || !slices.Contains(o.ErrorCodes, 70008) {
		t.Errorf("unused past its lifetime: %d %+v, want invalid_grant 70008", st, o)
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 1})
	base := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "client_id": {graphsim.DefaultDaemonApp},
			"client_secret": {graphsim.DefaultDaemonSecret}, "scope": {"https://graph.microsoft.com/.default"}}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	tests := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantError  string
		wantCode   int
	}{
		{"ok", base(), http.StatusOK, "", 0},
		{"ok with OIDC scopes added by MSAL", base("scope", "https://graph.microsoft.com/.default openid offline_access profile"), http.StatusOK, "", 0},
		{"scope without /.default", base("scope", "https://graph.microsoft.com/Presence.Read.All"), http.StatusBadRequest, "invalid_scope", 1002012},
		{"wrong secret", base("client_secret", "nope"), http.StatusUnauthorized, "invalid_client", 7000215},
		{"no credential", base("client_secret", ""), http.StatusBadRequest, "invalid_client", 7000218},
		{"public app", base("client_id", graphsim.DefaultPublicApp), http.StatusUnauthorized, "invalid_client", 7000215},
		{"unknown app", base("client_id", "who"), http.StatusBadRequest, "unauthorized_client", 700016},
		{"garbage assertion", base("client_secret", "", "client_assertion", "a.b.c", "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), http.StatusUnauthorized, "invalid_client", 700027},
		{"unknown grant", base("grant_type", "password"), http.StatusBadRequest, "unsupported_grant_type", 70003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, o := token(t, s, tt.form)
			if st != tt.wantStatus || o.Error != tt.wantError {
				t.Fatalf("%d %+v, want %d %q", st, o, tt.wantStatus, tt.wantError)
			}
			if tt.wantCode != 0 && !slices.Contains(o.ErrorCodes, tt.wantCode) {
				t.Errorf("error_codes %v, want %d", o.ErrorCodes, tt.wantCode)
			}
			if st == http.StatusOK {
				c := jwtClaims(t, o.AccessToken)
				roles, _ := c["roles"].([]any)
				if len(roles) != 3 || roles[0] != "Presence.Read.All" || roles[1] != "Presence.ReadWrite.All" || roles[2] != "User.ReadBasic.All" || c["scp"] != nil {
					t.Errorf("app token claims %v, want roles [Presence.Read.All Presence.ReadWrite.All User.ReadBasic.All] and no scp", c)
				}
				if o.RefreshToken != "" {
					t.Error("client credentials returned a refresh token")
				}
			}
		})
	}
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3 (header.payload.signature)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("payload is not base64url: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// RevokeSessions: tokens issued before are refused with 401 (with a claims
// challenge when asked), tokens issued after are accepted, and the refresh
// tokens go too unless kept.
func TestRevokeSessions(t *testing.T) {
	s := start(t, graphsim.Options{Users: 3})
	id := s.Users()[0].ID
	old := appToken(t, s)
	if r := do(t, s, "GET", "/v1.0/users/"+id+"/presence", old, nil); r.Status != 200 {
		t.Fatalf("before: %d", r.Status)
	}
	if n := s.RevokeSessions(graphsim.RevokeOptions{KeepRefreshTokens: true, ClaimsChallenge: true}); n != 0 {
		t.Errorf("revoked %d refresh tokens, want none kept", n)
	}
	r := do(t, s, "GET", "/v1.0/users/"+id+"/presence", old, nil)
	if r.Status != 401 || r.graphErrorCode(t) != "InvalidAuthenticationToken" {
		t.Fatalf("old token after the revocation: %d %s", r.Status, r.Body)
	}
	ch := r.Header.Get("WWW-Authenticate")
	i := strings.Index(ch, `claims="`)
	if !strings.Contains(ch, `error="insufficient_claims"`) || i < 0 {
		t.Fatalf("WWW-Authenticate = %q, want a claims challenge", ch)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(ch[i+len(`claims="`):], `"`))
	if err != nil || !strings.Contains(string(raw), `"access_token":{"nbf":{"essential":true`) {
		t.Fatalf("claims = %q, %v", raw, err)
	}
	if r := do(t, s, "GET", "/v1.0/users/"+id+"/presence", appToken(t, s), nil); r.Status != 200 {
		t.Fatalf("a token issued after the revocation: %d", r.Status)
	}
	s.RevokeSessions(graphsim.RevokeOptions{})
	r = do(t, s, "GET", "/v1.0/users/"+id+"/presence", old, nil)
	if r.Status != 401 || r.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("without a claims challenge: %d %q", r.Status, r.Header.Get("WWW-Authenticate"))
	}
}
