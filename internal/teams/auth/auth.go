// Package auth signs presencebridge's accounts in to Microsoft Entra ID with MSAL
// for Go: a service account once with the device-code flow (then silently from the
// cached refresh token), or an app registration with a client secret or
// certificate. MSAL's token cache is kept in the state file (store.BucketTokens),
// so a restart needs no new sign-in.
//
// A dead sign-in (refresh token expired or revoked, Conditional Access, MFA) is the
// failure that makes peer products lose presence silently; here Token returns a
// *NeedsLoginError on every call, the cause is logged once with the fix, and
// Status reports "needs-login" until Login succeeds.
package auth

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/confidential"
	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/public"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/store"
)

// Mode is how an account signs in (Presence.ini [Account.X] Auth).
type Mode string

// Sign-in modes.
const (
	// ModeDeviceCode signs a service account in once with the device-code flow
	// (delegated Presence.Read.All); later tokens come from its refresh token.
	ModeDeviceCode Mode = "devicecode"
	// ModeSecret uses the client credentials grant with a client secret
	// (application Presence.Read.All).
	ModeSecret Mode = "secret"
	// ModeCertificate uses the client credentials grant with a certificate.
	ModeCertificate Mode = "certificate"
)

// needsLoginRecheck is how long Token answers a known dead sign-in from memory
// before asking the token endpoint again: a poll every few seconds must not send
// a dead refresh token every few seconds, but a Conditional Access fix on the
// tenant's side should be noticed within minutes.
const needsLoginRecheck = 5 * time.Minute

// Options configure one account's Authenticator.
type Options struct {
	// AccountID is the [Account.X] id; also the key of the token cache in the store.
	AccountID string
	TenantID  string
	ClientID  string
	// Authority is the full authority URL, e.g.
	// https://login.microsoftonline.com/<tenant>; it must be https.
	Authority string
	// GraphURL is the Graph base, e.g. https://graph.microsoft.com/v1.0. Scopes
	// derive from its origin: delegated "<origin>/Presence.Read.All" and
	// "<origin>/User.ReadBasic.All", application "<origin>/.default".
	GraphURL string
	Mode     Mode
	// ClientSecret is the secret's value (ModeSecret).
	ClientSecret string
	// CertificateFile holds the PEM certificate, and the unencrypted private key
	// unless CertificateKeyFile names a separate key file (ModeCertificate).
	CertificateFile    string
	CertificateKeyFile string
	// Username is the service account expected to sign in (ModeDeviceCode): Login
	// refuses another account, and Token picks this one from the cache. Empty
	// accepts whoever signs in.
	Username string
	// HTTPClient carries all of MSAL's traffic (proxy and CA are its business);
	// nil means a client with a 30 s timeout and the environment's proxy.
	HTTPClient *http.Client
	// Store persists the token cache; required.
	Store *store.DB
	// Clock times the status and the re-check of a dead sign-in; default clock.Real{}.
	Clock clock.Clock
	// Logger receives sign-in events; default discards.
	Logger *slog.Logger
}

// State is the sign-in state of an account.
type State string

// States reported by Status.
const (
	StateUnknown    State = "unknown"     // no token asked for yet
	StateOK         State = "ok"          // the last token request succeeded
	StateNeedsLogin State = "needs-login" // run `presencebridge login --account X`
	StateError      State = "error"       // the last token request failed otherwise (see LastError)
)

// Status is an account's sign-in state for `status`, the control endpoint and metrics.
type Status struct {
	State State `json:"state"`
	// Username is the signed-in account (device code); empty for app sign-in.
	Username string `json:"username,omitempty"`
	// ExpiresOn is when the current access token expires.
	ExpiresOn time.Time `json:"expiresOn,omitzero"`
	// LastError is the sanitised cause of the current needs-login or error state.
	LastError string `json:"lastError,omitempty"`
	// Fix is what to do about LastError, when presencebridge knows
	// ("presencebridge login --account X" for needs-login).
	Fix string `json:"fix,omitempty"`
	// Since is when State last changed.
	Since time.Time `json:"since,omitzero"`
}

// Identity is who a Login signed in.
type Identity struct {
	Username  string    `json:"username,omitempty"` // empty for app sign-in
	TenantID  string    `json:"tenantId"`
	ExpiresOn time.Time `json:"expiresOn"`
}

// Authenticator gets Graph access tokens for one account.
type Authenticator struct {
	o      Options
	log    *slog.Logger
	clock  clock.Clock
	scopes []string // delegated scopes or the app's .default
	// secrets are removed from every error and log line.
	secrets []string

	pc   public.Client       // ModeDeviceCode
	cc   confidential.Client // ModeSecret, ModeCertificate
	cred confidential.Credential
	copt []confidential.Option // for Login's cache-less proof of the credentials

	cache *tokenCache

	mu         sync.Mutex // guards the fields below
	st         Status
	failKind   failureKind // kind of the current failure, when State is needs-login or error
	held       *NeedsLoginError
	lastTryBad time.Time // when the current needs-login was last confirmed
	// refused is the SHA-256 of the last access token Graph refused although
	// it was freshly issued (Refused); Token never serves it as a good one.
	refused [32]byte
}

// New checks o and builds the MSAL client. It reads the certificate files but
// makes no network call.
func New(o Options) (*Authenticator, error) {
	if o.AccountID == "" || strings.Contains(o.AccountID, "|") {
		return nil, fmt.Errorf("account id %q: want a non-empty id without '|'", o.AccountID)
	}
	if o.ClientID == "" {
		return nil, errors.New("ClientID is empty: copy the Application (client) ID from the app registration's Overview page")
	}
	if o.Store == nil {
		return nil, errors.New("auth: no state store given")
	}
	au, err := url.Parse(o.Authority)
	if err != nil || au.Scheme != "https" || au.Host == "" || strings.Trim(au.Path, "/") == "" {
		return nil, fmt.Errorf("authority %q (LoginURL + TenantID) is not an https URL with a tenant, e.g. https://login.microsoftonline.com/<tenant id>", o.Authority)
	}
	origin, err := graphOrigin(o.GraphURL)
	if err != nil {
		return nil, err
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	a := &Authenticator{o: o, log: o.Logger, clock: o.Clock}
	a.st = Status{State: StateUnknown, Since: o.Clock.Now()}
	tc := newTokenCache(o.Store, o.AccountID)
	a.cache = tc

	switch o.Mode {
	case ModeDeviceCode:
		a.scopes = []string{origin + "/Presence.Read.All", origin + "/User.ReadBasic.All"}
		a.pc, err = public.New(o.ClientID, public.WithAuthority(o.Authority), public.WithCache(tc),
			public.WithHTTPClient(o.HTTPClient), public.WithInstanceDiscovery(false))
		if err != nil {
			return nil, fmt.Errorf("set up device-code sign-in for %s: %w", o.Authority, err)
		}
		// Show who is signed in before the first token request.
		if acct, ok, err := a.account(context.Background()); err == nil && ok {
			a.st.Username = acct.PreferredUsername
		}
	case ModeSecret, ModeCertificate:
		a.scopes = []string{origin + "/.default"}
		if o.Mode == ModeSecret {
			if o.ClientSecret == "" {
				return nil, errors.New("ClientSecret is empty (Auth = secret): put the secret's Value from the app registration's Certificates & secrets page")
			}
			a.secrets = append(a.secrets, o.ClientSecret)
			a.cred, err = confidential.NewCredFromSecret(o.ClientSecret)
		} else {
			a.cred, err = certCredential(o.CertificateFile, o.CertificateKeyFile)
		}
		if err != nil {
			return nil, err
		}
		a.copt = []confidential.Option{confidential.WithHTTPClient(o.HTTPClient), confidential.WithInstanceDiscovery(false)}
		a.cc, err = confidential.New(o.Authority, o.ClientID, a.cred, append([]confidential.Option{confidential.WithCache(tc)}, a.copt...)...)
		if err != nil {
			return nil, fmt.Errorf("set up app sign-in for %s: %w", o.Authority, err)
		}
	default:
		return nil, fmt.Errorf("sign-in mode %q: use %s, %s or %s", o.Mode, ModeDeviceCode, ModeSecret, ModeCertificate)
	}
	return a, nil
}

// graphOrigin is scheme://host of the Graph URL, the resource of the scopes.
func graphOrigin(graphURL string) (string, error) {
	u, err := url.Parse(graphURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("GraphURL %q is not an https URL, e.g. https://graph.microsoft.com/v1.0", graphURL)
	}
	return u.Scheme + "://" + u.Host, nil
}

// certCredential reads the certificate (and key) PEM files. The key must be RSA
// and unencrypted (MSAL's CertFromPEM); errors name the file, never its content.
func certCredential(certFile, keyFile string) (confidential.Credential, error) {
	if certFile == "" {
		return confidential.Credential{}, errors.New("CertificateFile is empty (Auth = certificate): give the PEM file with the certificate and its private key")
	}
	data, err := os.ReadFile(certFile)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("CertificateFile: %w", err)
	}
	files := certFile
	if keyFile != "" {
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return confidential.Credential{}, fmt.Errorf("CertificateKeyFile: %w", err)
		}
		data = append(append(data, '\n'), key...)
		files += " and " + keyFile
	}
	var certs []*x509.Certificate
	var key crypto.PrivateKey
	certs, key, err = confidential.CertFromPEM(data, "")
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("read certificate and key from %s: %v (want PEM: a CERTIFICATE block and an unencrypted RSA PRIVATE KEY or PRIVATE KEY block)", files, err)
	}
	cred, err := confidential.NewCredFromCert(certs, key)
	if err != nil {
		return confidential.Credential{}, fmt.Errorf("certificate and key in %s: %v", files, err)
	}
	return cred, nil
}

// Token returns an access token for Graph without user interaction: device code
// from the cached refresh token (MSAL refreshes when the access token is within
// 5 minutes of expiry), app sign-in from MSAL's app token cache or a new client
// credentials grant. A dead sign-in returns *NeedsLoginError, a refused
// configuration *CredentialsError; other failures are transient or unknown and
// come back as an ordinary error.
func (a *Authenticator) Token(ctx context.Context) (string, error) {
	return a.token(ctx, "")
}

// Renew is Graph's 401 (InvalidAuthenticationToken) answered: the access tokens
// cached for the account are dropped and a new one is fetched (device code: from
// the refresh token; app: with the secret or certificate), passing claims, the
// decoded claims challenge of Graph's WWW-Authenticate if it sent one, to MSAL.
// A revoked sign-in gives *NeedsLoginError at once, as Token would, instead of
// failing every poll until the refused access token expires (up to an hour).
func (a *Authenticator) Renew(ctx context.Context, claims string) (string, error) {
	if err := a.cache.dropAccessTokens(); err != nil {
		return "", fmt.Errorf("account %q: drop the refused access token: %w", a.o.AccountID, err)
	}
	a.log.Info("Graph refused the access token; getting a new one", "claimsChallenge", claims != "")
	return a.token(ctx, claims)
}

// Refused records that Graph refused tok, a token Renew had just fetched: the
// tenant does not accept this account's tokens (a device-code account shows
// needs-login with the fix, an app registration an error). reason is Graph's
// answer. Token does not serve tok again as a good token.
func (a *Authenticator) Refused(tok, reason string) error {
	a.mu.Lock()
	a.refused = sha256.Sum256([]byte(tok))
	a.mu.Unlock()
	f := failure{kind: failOther, reason: "Graph refused a newly issued access token: " + sanitise(reason, a.secrets)}
	if a.o.Mode == ModeDeviceCode {
		f.kind = failNeedsLogin
	}
	return a.failed(f, "use token")
}

func (a *Authenticator) token(ctx context.Context, claims string) (string, error) {
	if held := a.heldNeedsLogin(); held != nil {
		return "", held
	}
	var (
		tok      string
		username string
		expires  time.Time
		fail     *failure
	)
	if a.o.Mode == ModeDeviceCode {
		acct, ok, err := a.account(ctx)
		switch {
		case err != nil:
			f := classify(err, a.o.Mode, a.secrets)
			fail = &f
		case !ok:
			reason := "no account is signed in yet"
			if a.o.Username != "" {
				reason = fmt.Sprintf("%s has not signed in yet", a.o.Username)
			}
			fail = &failure{kind: failNeedsLogin, reason: reason}
		default:
			opts := []public.AcquireSilentOption{public.WithSilentAccount(acct)}
			if claims != "" {
				opts = append(opts, public.WithClaims(claims))
			}
			res, err := a.pc.AcquireTokenSilent(ctx, a.scopes, opts...)
			if err != nil {
				f := classify(err, a.o.Mode, a.secrets)
				fail = &f
			} else {
				tok, username, expires = res.AccessToken, acct.PreferredUsername, res.ExpiresOn
			}
		}
	} else {
		var opts []confidential.AcquireByCredentialOption
		if claims != "" {
			opts = append(opts, confidential.WithClaims(claims))
		}
		res, err := a.cc.AcquireTokenByCredential(ctx, a.scopes, opts...)
		if err != nil {
			f := classify(err, a.o.Mode, a.secrets)
			fail = &f
		} else {
			tok, expires = res.AccessToken, res.ExpiresOn
		}
	}
	if fail == nil && a.isRefused(tok) {
		// Still the token Graph refused (MSAL serves it from its cache): the
		// refusal stands until a new token is issued.
		return "", a.failed(a.refusal(), "get token")
	}
	if fail != nil {
		if fail.ctxErr != nil && ctx.Err() != nil {
			// The caller gave up (shutdown, cycle deadline): says nothing about the sign-in.
			return "", &safeError{msg: fmt.Sprintf("account %q: get token: %s", a.o.AccountID, fail.reason), ctx: fail.ctxErr}
		}
		return "", a.failed(*fail, "get token")
	}
	a.succeeded(username, expires)
	return tok, nil
}

func (a *Authenticator) isRefused(tok string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refused != [32]byte{} && a.refused == sha256.Sum256([]byte(tok))
}

// refusal is the current failure, for a token that is still the refused one.
func (a *Authenticator) refusal() failure {
	a.mu.Lock()
	defer a.mu.Unlock()
	return failure{kind: a.failKind, reason: a.st.LastError}
}

// account is the cached account Token uses: the one named by Options.Username,
// or else the first (Login keeps only one).
func (a *Authenticator) account(ctx context.Context) (public.Account, bool, error) {
	accts, err := a.pc.Accounts(ctx)
	if err != nil {
		return public.Account{}, false, err
	}
	for _, acct := range accts {
		if a.o.Username == "" || strings.EqualFold(acct.PreferredUsername, a.o.Username) {
			return acct, true, nil
		}
	}
	return public.Account{}, false, nil
}

// Login signs the account in. Device code: it asks for a code, calls show with
// Microsoft's instructions (URL and code), and waits until the user has signed in
// on another device, the code expires or ctx ends. App sign-in: it gets a token
// with the configured secret or certificate (bypassing the cache, so a stale
// cached token cannot hide a wrong secret) and shows nothing.
func (a *Authenticator) Login(ctx context.Context, show func(message string)) (Identity, error) {
	if a.o.Mode != ModeDeviceCode {
		return a.loginApp(ctx)
	}
	dc, err := a.pc.AcquireTokenByDeviceCode(ctx, a.scopes)
	if err != nil {
		return Identity{}, a.loginError(err, "start device-code sign-in")
	}
	msg := dc.Result.Message
	if msg == "" {
		msg = fmt.Sprintf("To sign in, open %s and enter the code %s.", dc.Result.VerificationURL, dc.Result.UserCode)
	}
	if show != nil {
		show(msg)
	}
	res, err := dc.AuthenticationResult(ctx)
	if err != nil {
		return Identity{}, a.loginError(err, "device-code sign-in")
	}
	who := res.Account.PreferredUsername
	if a.o.Username != "" && !strings.EqualFold(who, a.o.Username) {
		// A common slip: an admin approves the code with their own account. Keep
		// the wrong account out of the cache so Token never uses it.
		if err := a.pc.RemoveAccount(ctx, res.Account); err != nil {
			return Identity{}, fmt.Errorf("account %q: signed in as %s instead of %s, and removing that sign-in failed: %w", a.o.AccountID, who, a.o.Username, err)
		}
		return Identity{}, fmt.Errorf("account %q: signed in as %s, but Username is %s; run login again and sign in as %s (or change Username)",
			a.o.AccountID, who, a.o.Username, a.o.Username)
	}
	// One account per cache: drop earlier sign-ins (another user, or the same
	// user's old home account) so Token cannot pick a stale one.
	if accts, err := a.pc.Accounts(ctx); err == nil {
		for _, acct := range accts {
			if acct.HomeAccountID != res.Account.HomeAccountID {
				if err := a.pc.RemoveAccount(ctx, acct); err != nil {
					return Identity{}, fmt.Errorf("account %q: remove the earlier sign-in of %s: %w", a.o.AccountID, acct.PreferredUsername, err)
				}
			}
		}
	}
	tenant := res.Account.Realm
	if tenant == "" {
		tenant = res.IDToken.TenantID
	}
	a.loggedIn(who, res.ExpiresOn)
	a.log.Info("Signed in", "username", who, "tenant", tenant, "expires_on", res.ExpiresOn)
	return Identity{Username: who, TenantID: tenant, ExpiresOn: res.ExpiresOn}, nil
}

func (a *Authenticator) loginApp(ctx context.Context) (Identity, error) {
	cc, err := confidential.New(a.o.Authority, a.o.ClientID, a.cred, a.copt...)
	if err != nil {
		return Identity{}, fmt.Errorf("account %q: set up app sign-in: %w", a.o.AccountID, err)
	}
	res, err := cc.AcquireTokenByCredential(ctx, a.scopes)
	if err != nil {
		return Identity{}, a.loginError(err, "app sign-in")
	}
	tenant := tenantOf(res.AccessToken)
	if tenant == "" {
		tenant = a.o.TenantID
	}
	a.loggedIn("", res.ExpiresOn)
	a.log.Info("App sign-in checked", "client_id", a.o.ClientID, "tenant", tenant, "expires_on", res.ExpiresOn)
	return Identity{TenantID: tenant, ExpiresOn: res.ExpiresOn}, nil
}

// loginError reports a failed Login to its caller (who shows it); it leaves the
// state alone: a failed attempt does not make a working sign-in bad.
func (a *Authenticator) loginError(err error, what string) error {
	f := classify(err, a.o.Mode, a.secrets)
	if f.kind == failCredentials {
		return &CredentialsError{Account: a.o.AccountID, Reason: f.reason, Fix: f.fix}
	}
	if f.code == 70020 { // expired_token
		f.reason += " (the code expired before the sign-in was finished; run login again)"
	}
	if f.ctxErr != nil && f.code == 0 {
		f.reason = "gave up waiting for the sign-in: " + f.reason
	}
	return &safeError{msg: fmt.Sprintf("account %q: %s: %s", a.o.AccountID, what, f.reason), ctx: f.ctxErr}
}

// tenantOf reads the tid claim of a JWT access token (unverified: it is only
// shown), or "" if the token is not a readable JWT.
func tenantOf(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var c struct {
		Tid string `json:"tid"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Tid
}

// Status reports the account's sign-in state.
func (a *Authenticator) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// heldNeedsLogin returns a copy of the current *NeedsLoginError while it is fresh
// (see needsLoginRecheck), nil when Token should ask MSAL.
func (a *Authenticator) heldNeedsLogin() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held == nil || a.st.State != StateNeedsLogin || !a.clock.Now().Before(a.lastTryBad.Add(needsLoginRecheck)) {
		return nil
	}
	e := *a.held
	return &e
}

// failed records a failed token request and returns the error for Token's
// caller. Needs-login and refused credentials are logged once when they begin,
// with the fix; transient failures are only returned (the caller logs them).
func (a *Authenticator) failed(f failure, what string) error {
	now := a.clock.Now()
	var err error
	state := StateError
	switch f.kind {
	case failNeedsLogin:
		state = StateNeedsLogin
		err = &NeedsLoginError{Account: a.o.AccountID, Reason: f.reason}
	case failCredentials:
		err = &CredentialsError{Account: a.o.AccountID, Reason: f.reason, Fix: f.fix}
	default:
		err = &safeError{msg: fmt.Sprintf("account %q: %s: %s", a.o.AccountID, what, f.reason), ctx: f.ctxErr}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	begins := a.st.State != state || a.failKind != f.kind
	if a.st.State != state {
		a.st.Since = now
	}
	a.st.State = state
	a.st.LastError = f.reason
	a.st.Fix = ""
	switch e := err.(type) {
	case *NeedsLoginError:
		a.st.Fix = e.Fix()
	case *CredentialsError:
		a.st.Fix = e.Fix
	}
	a.st.ExpiresOn = time.Time{}
	a.failKind = f.kind
	a.held = nil
	if nl, ok := err.(*NeedsLoginError); ok {
		a.held = nl
		a.lastTryBad = now
		if begins {
			a.log.Error("Sign-in needed: presence of this account is not read until someone signs in again",
				"reason", f.reason, "fix", nl.Fix())
		}
		e := *nl
		return &e
	}
	if f.kind == failCredentials && begins {
		a.log.Error("Sign-in refused: presence of this account is not read until the configuration is fixed",
			"reason", f.reason, "fix", f.fix)
	}
	return err
}

// succeeded records a token served.
func (a *Authenticator) succeeded(username string, expires time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.State != StateOK {
		if a.st.State == StateNeedsLogin || a.failKind == failCredentials {
			a.log.Info("Sign-in works again", "username", username, "expires_on", expires)
		}
		a.st.Since = a.clock.Now()
	}
	a.st.State = StateOK
	if username != "" {
		a.st.Username = username
	}
	a.st.ExpiresOn = expires
	a.st.LastError = ""
	a.st.Fix = ""
	a.held = nil
}

// loggedIn records a successful Login.
func (a *Authenticator) loggedIn(username string, expires time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.State != StateOK {
		a.st.Since = a.clock.Now()
	}
	a.st = Status{State: StateOK, Username: username, ExpiresOn: expires, Since: a.st.Since}
	a.failKind = failOther
	a.held = nil
}
