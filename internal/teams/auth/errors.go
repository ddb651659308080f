package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	msalerrors "github.com/AzureAD/microsoft-authentication-library-for-go/apps/errors"
)

// NeedsLoginError means the account has no usable sign-in: nothing is stored yet,
// or the refresh token is dead (expired, revoked, blocked by Conditional Access,
// MFA required). Only a new `presencebridge login` fixes it.
type NeedsLoginError struct {
	Account string // the [Account.X] id
	Reason  string // sanitised cause, e.g. "invalid_grant: AADSTS70008: ..."
}

func (e *NeedsLoginError) Error() string {
	return fmt.Sprintf("account %q: sign-in needed: %s; run: %s", e.Account, e.Reason, e.Fix())
}

// Fix is the command that signs the account in again.
func (e *NeedsLoginError) Fix() string { return "presencebridge login --account " + e.Account }

// Logged reports that the Authenticator has logged this error (once per episode),
// so callers need not log it again.
func (e *NeedsLoginError) Logged() bool { return true }

// CredentialsError means the tenant refused the account's configuration rather
// than a user's sign-in: a wrong or expired client secret, a certificate the app
// registration does not know, an unknown client or tenant id, public client flows
// switched off. Signing in again does not help; Fix says what does.
type CredentialsError struct {
	Account string
	Reason  string // sanitised cause, e.g. "invalid_client: AADSTS7000215: Invalid client secret provided."
	Fix     string
}

func (e *CredentialsError) Error() string {
	return fmt.Sprintf("account %q: sign-in refused: %s; fix: %s", e.Account, e.Reason, e.Fix)
}

// failureKind sorts MSAL's errors by what a user has to do about them.
type failureKind int

const (
	failOther       failureKind = iota // permanent as far as we know, but not one we can name a fix for
	failTransient                      // network, timeout, 5xx, 429: try again later
	failNeedsLogin                     // the refresh token or the stored sign-in is gone
	failCredentials                    // configuration: secret, certificate, client id, tenant
)

// failure is a classified, sanitised MSAL error.
type failure struct {
	kind   failureKind
	reason string // safe to log, return and show
	code   int    // AADSTS code, 0 if none
	fix    string // for failCredentials
	ctxErr error  // context.Canceled/DeadlineExceeded when the caller gave up
}

// oauthError is the error body of the Microsoft identity platform's token and
// device-code endpoints (RFC 6749 §5.2 plus Entra's extensions).
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
	SubError    string `json:"suberror"`
}

// needsLoginCodes are AADSTS codes after which only an interactive sign-in helps
// (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
var needsLoginCodes = map[int]string{
	50076:  "multi-factor authentication is now required",
	50078:  "multi-factor authentication is now required",
	50079:  "the user must register for multi-factor authentication",
	50089:  "the sign-in flow expired",
	50132:  "the session was revoked",
	50133:  "the session ended after a password change or expiry",
	50173:  "the grant was revoked (password change or an admin revoked sessions)",
	53003:  "blocked by Conditional Access (ask the admin to exclude the service account or allow this location)",
	65001:  "consent for Presence.Read.All and User.ReadBasic.All is missing (an admin must grant it)",
	70008:  "the refresh token expired or was revoked",
	700082: "the refresh token expired after 90 days without use",
	700084: "the refresh token expired",
}

// credentialFixes are AADSTS codes that name a configuration problem, with the fix.
var credentialFixes = map[int]string{
	7000215: "ClientSecret is wrong: copy the secret's Value (not its Secret ID) from the app registration's Certificates & secrets page",
	7000222: "the client secret has expired: create a new one under Certificates & secrets and put its Value in ClientSecret",
	700027:  "the certificate is not accepted: upload the public certificate of CertificateFile to the app registration (Certificates & secrets) and check it has not expired",
	700024:  "the client assertion was refused: check this machine's clock and the certificate in CertificateFile",
	700016:  "ClientID is not an app registered in TenantID: copy the Application (client) ID and the Directory (tenant) ID from the app registration's Overview page",
	7000218: "the app registration does not allow public client flows: turn on \"Allow public client flows\" under Authentication, or use Auth = secret or certificate",
	90002:   "TenantID was not found: check TenantID and LoginURL (national clouds have their own login host)",
	900023:  "TenantID is not a valid tenant id or domain",
	500011:  "Microsoft Graph is not available in this tenant or cloud: check GraphURL",
	1002012: "the scope was refused: check GraphURL",
	70011:   "the scope was refused: check GraphURL",
}

// classify turns an MSAL error into a failure, never keeping text that could hold
// a secret: MSAL's CallErr carries the whole reply body, and its Verbose form the
// request with the form (client secret, refresh token, client assertion).
func classify(err error, mode Mode, secrets []string) failure {
	f := failure{kind: failOther}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		f.kind = failTransient
		f.ctxErr = context.Canceled
		if errors.Is(err, context.DeadlineExceeded) {
			f.ctxErr = context.DeadlineExceeded
		}
	}
	var ce msalerrors.CallErr
	if errors.As(err, &ce) {
		f = classifyCall(ce, mode, secrets)
		return f
	}
	msg := err.Error()
	switch {
	case msg == "no token found":
		// MSAL's AcquireTokenSilent: neither a valid access token nor a refresh
		// token is cached for the account.
		f.kind = failNeedsLogin
		f.reason = "no refresh token is stored for the account"
		return f
	case f.ctxErr == nil && isNetworkError(err):
		f.kind = failTransient
	}
	f.reason = sanitise(oneLine(msg), secrets)
	return f
}

// isNetworkError reports errors from the HTTP client (dial, TLS, proxy, reset):
// MSAL wraps them as "server response error".
func isNetworkError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || strings.HasPrefix(err.Error(), "server response error")
}

func classifyCall(ce msalerrors.CallErr, mode Mode, secrets []string) failure {
	f := failure{kind: failOther}
	status := 0
	if ce.Resp != nil {
		status = ce.Resp.StatusCode
	}
	where := ""
	if ce.Req != nil && ce.Req.URL != nil {
		u := *ce.Req.URL
		u.RawQuery, u.Fragment, u.User = "", "", nil
		where = u.String()
	}
	var oe oauthError
	body := callBody(ce)
	if body != "" {
		_ = json.Unmarshal([]byte(body), &oe)
	}
	if oe.Error == "" {
		// Not an OAuth error: a proxy's or load balancer's page. Its text is not
		// ours to repeat (it could echo the request), the status says enough.
		f.reason = fmt.Sprintf("%s answered HTTP %d", where, status)
		if status >= 500 || status == 429 || status == 408 {
			f.kind = failTransient
		}
		if status == 407 {
			f.reason += " (the proxy wants credentials: check [Proxy] URL)"
		}
		f.reason = sanitise(f.reason, secrets)
		return f
	}
	f.code = aadstsCode(oe)
	f.reason = sanitise(describe(oe, f.code), secrets)
	switch {
	case status >= 500 || status == 429 || oe.Error == "temporarily_unavailable":
		f.kind = failTransient
	case credentialFixes[f.code] != "":
		f.kind = failCredentials
		f.fix = credentialFixes[f.code]
	case oe.Error == "invalid_client" || oe.Error == "unauthorized_client" || oe.Error == "invalid_tenant":
		f.kind = failCredentials
		f.fix = "check ClientID, TenantID and the account's credentials against the app registration"
	case mode == ModeDeviceCode && (needsLoginCodes[f.code] != "" || oe.Error == "invalid_grant" ||
		oe.Error == "interaction_required" || oe.Error == "login_required" || oe.Error == "consent_required"):
		f.kind = failNeedsLogin
		if hint := needsLoginCodes[f.code]; hint != "" {
			f.reason += " (" + hint + ")"
		}
	}
	return f
}

// callBody is the reply body MSAL put in the error: its message ends with
// "reply status code was N:\n<body>". The body reader itself may have been drained
// by MSAL (the device-code poll reads it), the message keeps a copy.
func callBody(ce msalerrors.CallErr) string {
	if ce.Err == nil {
		return ""
	}
	msg := ce.Err.Error()
	const marker = "reply status code was "
	i := strings.Index(msg, marker)
	if i < 0 {
		return ""
	}
	rest := msg[i+len(marker):]
	j := strings.IndexByte(rest, '\n')
	if j < 0 {
		return ""
	}
	return strings.TrimSpace(rest[j+1:])
}

func aadstsCode(oe oauthError) int {
	if len(oe.Codes) > 0 {
		return oe.Codes[0]
	}
	if m := aadstsPrefix.FindStringSubmatch(oe.Description); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

var aadstsPrefix = regexp.MustCompile(`^AADSTS(\d+)`)

// describe makes "error: AADSTSn: first sentences" from an OAuth error, dropping
// Entra's trailer (Trace ID, Correlation ID, Timestamp), which changes on every
// call and helps nobody reading a log.
func describe(oe oauthError, code int) string {
	d := oe.Description
	for _, cut := range []string{"\r", "\n", " Trace ID:", " Correlation ID:", " Timestamp:"} {
		if i := strings.Index(d, cut); i >= 0 {
			d = d[:i]
		}
	}
	d = strings.TrimSpace(d)
	if code != 0 && !strings.HasPrefix(d, "AADSTS") {
		d = fmt.Sprintf("AADSTS%d: %s", code, d)
	}
	const maxLen = 400
	if len(d) > maxLen {
		d = d[:maxLen] + "..."
	}
	out := oe.Error
	if d != "" {
		out += ": " + d
	}
	if oe.SubError != "" {
		out += " (" + oe.SubError + ")"
	}
	return out
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// tokenShaped matches runs that look like tokens, secrets or assertions: long
// stretches of base64/base64url characters, dots included so a JWT is one run.
// '/', ':' and '=' end a run, so URLs, GUID paths and "name=value" keep their
// names (a padded value leaves its '=' behind, which tells nothing).
var tokenShaped = regexp.MustCompile(`[A-Za-z0-9_\-.~+]{32,}`)

var guidLike = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

const redacted = "[redacted]"

// sanitise removes the given secrets and anything token-shaped from s. GUIDs
// (tenant, client, trace ids) and host names are kept: a field engineer needs them.
func sanitise(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, redacted)
			if q := url.QueryEscape(sec); q != sec {
				s = strings.ReplaceAll(s, q, redacted)
			}
		}
	}
	return tokenShaped.ReplaceAllStringFunc(s, func(m string) string {
		if guidLike.MatchString(m) || !hasLetterAndDigit(m) {
			return m
		}
		// A sentence's full stop is not part of the token.
		trimmed := strings.TrimRight(m, ".")
		return redacted + m[len(trimmed):]
	})
}

func hasLetterAndDigit(s string) bool {
	var letter, digit bool
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letter = true
		}
	}
	return letter && digit
}

// safeError is an error whose text has been sanitised; it unwraps only to a
// context error, never to MSAL's error (whose text holds the reply body).
type safeError struct {
	msg string
	ctx error
}

func (e *safeError) Error() string { return e.msg }
func (e *safeError) Unwrap() error { return e.ctx }
