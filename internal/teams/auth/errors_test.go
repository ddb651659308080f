package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
)

const (
	tokenURL = "https://login.microsoftonline.com/4f1c3c57-0b5e-4d0e-9a55-3b1a7f0e2c11/oauth2/v2.0/token"
	// A refresh token in Entra's shape, and a JWT: neither may survive sanitising.
	someRT  = "0.AXEAVzwcT14LDk2aVTsafw4sEZ2Ujcx1yKlMhGSoBJ0D7b8BAAA.AgABAwEAAAApTwJmzXqdR4BN2miheQMYAgDs_wUA9P9y"
	someJWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)

// callErr builds the error MSAL's comm client returns for a non-2xx reply.
func callErr(status int, body string) error {
	req := httptest.NewRequest(http.MethodPost, tokenURL, strings.NewReader("grant_type=refresh_token&refresh_token="+url.QueryEscape(someRT)))
	return msalerrors.CallErr{
		Req:  req,
		Resp: &http.Response{StatusCode: status, Body: http.NoBody},
		Err:  fmt.Errorf("http call(%s)(POST) error: reply status code was %d:\n%s", tokenURL, status, body),
	}
}

func entraBody(code, aadsts int, desc string) string {
	return fmt.Sprintf(`{"error":%q,"error_description":"AADSTS%d: %s Trace ID: 0b7c4c1e-6b2a-4b7e-8f3e-0d1c2b3a4f5e Correlation ID: 6f1e2d3c-4b5a-4968-8776-655443322110 Timestamp: 2026-03-02 09:00:00Z","error_codes":[%d],"timestamp":"2026-03-02 09:00:00Z","trace_id":"0b7c4c1e-6b2a-4b7e-8f3e-0d1c2b3a4f5e"}`,
		[]string{"invalid_grant", "interaction_required", "invalid_client", "unauthorized_client"}[code], aadsts, desc, aadsts)
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		mode       Mode
		wantKind   failureKind
		wantReason string // exact, or a prefix when it ends with "..."
	}{
		{"refresh token expired", callErr(400, entraBody(0, 70008, "The provided authorization code or refresh token has expired due to inactivity.")), ModeDeviceCode,
			failNeedsLogin, "invalid_grant: AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. (the refresh token expired or was revoked)"},
		{"conditional access", callErr(400, entraBody(1, 53003, "Access has been blocked by Conditional Access policies.")), ModeDeviceCode,
			failNeedsLogin, "interaction_required: AADSTS53003: Access has been blocked by Conditional Access policies. (blocked by Conditional Access ..."},
		{"password changed", callErr(400, entraBody(0, 50173, "The provided grant has expired due to it being revoked.")), ModeDeviceCode,
			failNeedsLogin, "invalid_grant: AADSTS50173: ..."},
		{"MFA now required", callErr(400, entraBody(1, 50078, "Presented multi-factor authentication has expired.")), ModeDeviceCode,
			failNeedsLogin, "interaction_required: AADSTS50078: ..."},
		{"invalid_grant without a known code", callErr(400, `{"error":"invalid_grant","error_description":"AADSTS9002313: Invalid request."}`), ModeDeviceCode,
			failNeedsLogin, "invalid_grant: AADSTS9002313: Invalid request."},
		{"expired secret", callErr(401, entraBody(2, 7000222, "The provided client secret keys for app 'x' are expired.")), ModeSecret,
			failCredentials, "invalid_client: AADSTS7000222: The provided client secret keys for app 'x' are expired."},
		{"public client flows off", callErr(400, entraBody(2, 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")), ModeDeviceCode,
			failCredentials, "invalid_client: AADSTS7000218: ..."},
		{"unknown client", callErr(400, entraBody(3, 700016, "Application with identifier 'x' was not found in the directory 'y'.")), ModeSecret,
			failCredentials, "unauthorized_client: AADSTS700016: ..."},
		{"invalid_grant for an app is not a sign-in problem", callErr(400, entraBody(0, 70000, "Provided grant is invalid or malformed.")), ModeSecret,
			failOther, "invalid_grant: AADSTS70000: Provided grant is invalid or malformed."},
		{"service unavailable", callErr(503, `{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred."}`), ModeDeviceCode,
			failTransient, "temporarily_unavailable: AADSTS90033: A transient error has occurred."},
		{"proxy error page", callErr(502, "<html>Bad gateway while sending refresh_token="+someRT+"</html>"), ModeDeviceCode,
			failTransient, tokenURL + " answered HTTP 502"},
		{"throttled", callErr(429, "Too many requests"), ModeSecret, failTransient, tokenURL + " answered HTTP 429"},
		{"proxy wants credentials", callErr(407, "Proxy Authentication Required"), ModeSecret, failOther, tokenURL + " answered HTTP 407 (the proxy wants credentials: check [Proxy] URL)"},
		{"description echoing a token", callErr(400, `{"error":"invalid_request","error_description":"AADSTS900144: bad parameter `+someJWT+` and `+someRT+`."}`), ModeDeviceCode,
			failOther, "invalid_request: AADSTS900144: bad parameter [redacted] and [redacted]."},
		{"nothing cached", errors.New("no token found"), ModeDeviceCode, failNeedsLogin, "no refresh token is stored for the account"},
		{"network", fmt.Errorf("server response error:\n %w", &url.Error{Op: "Post", URL: tokenURL, Err: errors.New("dial tcp 127.0.0.1:9: connect: connection refused")}), ModeSecret,
			failTransient, `server response error: Post "` + tokenURL + `": dial tcp 127.0.0.1:9: connect: connection refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := classify(tt.err, tt.mode, nil)
			if f.kind != tt.wantKind {
				t.Errorf("kind = %d, want %d (reason %q)", f.kind, tt.wantKind, f.reason)
			}
			if p, ok := strings.CutSuffix(tt.wantReason, "..."); ok {
				if !strings.HasPrefix(f.reason, p) {
					t.Errorf("reason = %q, want prefix %q", f.reason, p)
				}
			} else if f.reason != tt.wantReason {
				t.Errorf("reason = %q\n                want %q", f.reason, tt.wantReason)
			}
			if f.kind == failCredentials && f.fix == "" {
				t.Error("a refused configuration has no fix")
			}
			for _, secret := range []string{someRT, someJWT, "Trace ID", "Timestamp"} {
				if strings.Contains(f.reason, secret) {
					t.Errorf("reason keeps %q: %s", secret, f.reason)
				}
			}
		})
	}
}

func TestClassifyKeepsContextErrors(t *testing.T) {
	err := fmt.Errorf("server response error:\n %w", &url.Error{Op: "Post", URL: tokenURL, Err: context.DeadlineExceeded})
	f := classify(err, ModeSecret, nil)
	if f.kind != failTransient || f.ctxErr != context.DeadlineExceeded {
		t.Fatalf("classify(deadline) = %+v, want transient with context.DeadlineExceeded", f)
	}
	se := &safeError{msg: f.reason, ctx: f.ctxErr}
	if !errors.Is(se, context.DeadlineExceeded) {
		t.Error("the returned error does not unwrap to context.DeadlineExceeded")
	}
}

func TestSanitise(t *testing.T) {
	tests := []struct {
		name, in string
		secrets  []string
		want     string
	}{
		{"jwt", "token " + someJWT + " refused", nil, "token [redacted] refused"},
		{"refresh token", "refresh_token=" + someRT, nil, "refresh_token=[redacted]"},
		{"guids, hosts and urls stay", "POST " + tokenURL + " trace 0b7c4c1e-6b2a-4b7e-8f3e-0d1c2b3a4f5e",
			nil, "POST " + tokenURL + " trace 0b7c4c1e-6b2a-4b7e-8f3e-0d1c2b3a4f5e"},
		{"known secret", "client_secret sim-secret was wrong", []string{"sim-secret"}, "client_secret [redacted] was wrong"},
		{"form-encoded secret", "client_secret=ab%2Bcd%2Fef%3D", []string{"ab+cd/ef="}, "client_secret=[redacted]"},
		{"long words without digits stay", "Presence.Read.All.User.ReadBasic.All.scopes", nil, "Presence.Read.All.User.ReadBasic.All.scopes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sanitise(tt.in, tt.secrets); got != tt.want {
				t.Errorf("sanitise(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestErrorTexts(t *testing.T) {
	nl := &NeedsLoginError{Account: "contoso", Reason: "invalid_grant: AADSTS70008: expired."}
	if got, want := nl.Error(), `account "contoso": sign-in needed: invalid_grant: AADSTS70008: expired.; run: presencebridge login --account contoso`; got != want {
		t.Errorf("NeedsLoginError = %q, want %q", got, want)
	}
	ce := &CredentialsError{Account: "fabrikam", Reason: "invalid_client: AADSTS7000215: Invalid client secret provided.", Fix: "ClientSecret is wrong"}
	if got, want := ce.Error(), `account "fabrikam": sign-in refused: invalid_client: AADSTS7000215: Invalid client secret provided.; fix: ClientSecret is wrong`; got != want {
		t.Errorf("CredentialsError = %q, want %q", got, want)
	}
}
