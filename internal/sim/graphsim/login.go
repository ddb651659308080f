package graphsim

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 §4.1.7)
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Grant types as MSAL for Go sends them (apps/internal/oauth/ops/internal/grant).
const (
	grantDeviceCode        = "device_code"
	grantDeviceCodeURN     = "urn:ietf:params:oauth:grant-type:device_code"
	grantRefreshToken      = "refresh_token"
	grantClientCredentials = "client_credentials"
	assertionTypeJWT       = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// Permissions of the simulator's tokens: every delegated token carries
// delegatedScp (Presence.ReadWrite lets the signed-in user write their own
// presence only); an application token carries its app's roles, by default
// appRoles (admin consent given to what presencebridge asks for, writing
// included; SetAppRole withdraws one).
var (
	delegatedScp = "Presence.Read.All Presence.ReadWrite User.ReadBasic.All"
	appRoles     = []string{"Presence.Read.All", "Presence.ReadWrite.All", "User.ReadBasic.All"}
)

// graphAudience is the aud of access tokens, as Entra ID issues them for Graph.
const graphAudience = "https://graph.microsoft.com"

func isLoginPath(p string) bool {
	return strings.Contains(p, "/oauth2/") || strings.Contains(p, "/.well-known/") || p == "/devicelogin"
}

// tenantOK accepts the tenant id or one of the tenant's domains, as Entra ID does.
func (s *Server) tenantOK(t string) bool {
	t = strings.ToLower(t)
	if t == s.opts.TenantID {
		return true
	}
	for _, d := range s.opts.Domains {
		if t == d {
			return true
		}
	}
	return false
}

// oauthError is Entra ID's token-endpoint error body.
type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
	ErrorCodes       []int  `json:"error_codes,omitempty"`
	Timestamp        string `json:"timestamp"`
	TraceID          string `json:"trace_id"`
	CorrelationID    string `json:"correlation_id"`
	ErrorURI         string `json:"error_uri,omitempty"`
}

func writeOAuthError(w http.ResponseWriter, status int, code string, aadsts int, desc string) {
	e := oauthError{Error: code, ErrorDescription: desc, Timestamp: time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		TraceID: newGUID(), CorrelationID: newGUID()}
	if aadsts != 0 {
		e.ErrorCodes = []int{aadsts}
		e.ErrorDescription = fmt.Sprintf("AADSTS%d: %s", aadsts, desc)
		e.ErrorURI = fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts)
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode reply: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// base is the URL the client reached us by: discovery answers with the host the
// client used, so "localhost" and "127.0.0.1" authorities both validate in MSAL
// (the issuer host must match the authority host).
func base(r *http.Request) string { return "https://" + r.Host }

func (s *Server) handleOpenIDConfig(w http.ResponseWriter, r *http.Request) {
	t := r.PathValue("tenant")
	if !s.tenantOK(t) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", t))
		return
	}
	b := base(r) + "/" + t
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base(r) + "/" + s.opts.TenantID + "/v2.0",
		"authorization_endpoint":                b + "/oauth2/v2.0/authorize",
		"token_endpoint":                        b + "/oauth2/v2.0/token",
		"device_authorization_endpoint":         b + "/oauth2/v2.0/devicecode",
		"jwks_uri":                              b + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"tenant_region_scope":                   "EU",
		"cloud_instance_name":                   "graphsim.invalid",
		"msgraph_host":                          r.Host,
	})
}

func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"keys": []any{}})
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	writeOAuthError(w, http.StatusBadRequest, "unsupported_response_type", 0,
		"The simulated tenant supports the device code and client credentials flows only.")
}

func (s *Server) handleDeviceLogin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "presencebridge simulated tenant %s\n\nThere is no sign-in page here. Approve pending device codes with\n"+
		"  POST %s/_sim/devicecode/approve {\"upn\":\"%s\"}\n", s.opts.TenantID, base(r), s.opts.DeviceCodeUPN)
}

// deviceCode is one pending device authorization (RFC 8628).
type deviceCode struct {
	userCode string
	clientID string
	scope    string
	created  time.Time
	expires  time.Time
	approved string // UPN that approved it; "" while pending
}

func (s *Server) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	if !s.tenantOK(r.PathValue("tenant")) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found.", r.PathValue("tenant")))
		return
	}
	if err := parseForm(w, r); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, err.Error())
		return
	}
	clientID := r.PostForm.Get("client_id")
	infoOf(r).app = clientID
	app, ok := s.apps[clientID]
	switch {
	case clientID == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	case !ok:
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, s.opts.TenantID))
		return
	case !app.Public:
		writeOAuthError(w, http.StatusBadRequest, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'. (The app does not allow public client flows.)")
		return
	}
	scope := normaliseScope(r.PostForm.Get("scope"))
	if scope == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
		return
	}
	now := s.clock.Now()
	code := randomToken(48)
	dc := &deviceCode{userCode: userCode(), clientID: clientID, scope: scope, created: now, expires: now.Add(s.opts.DeviceCodeLifetime)}
	s.authMu.Lock()
	s.gcLocked(now)
	s.deviceCodes[code] = dc
	s.authMu.Unlock()
	verify := base(r) + "/devicelogin"
	s.log.Info("Device code issued", "client_id", clientID)
	writeJSON(w, http.StatusOK, map[string]any{
		"user_code":        dc.userCode,
		"device_code":      code,
		"verification_uri": verify,
		"expires_in":       int(s.opts.DeviceCodeLifetime / time.Second),
		"interval":         5,
		"message": fmt.Sprintf("To sign in, use a web browser to open the page %s and enter the code %s to authenticate. "+
			"(Simulated tenant: approve with POST %s/_sim/devicecode/approve.)", verify, dc.userCode, base(r)),
	})
}

// userCode is nine characters from an alphabet without look-alikes, like Entra's.
func userCode() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// gcLocked drops device codes expired for an hour; authMu held. Refresh tokens
// are kept (a few hundred bytes each) so a revoked one keeps answering AADSTS70008.
func (s *Server) gcLocked(now time.Time) {
	for k, dc := range s.deviceCodes {
		if now.After(dc.expires.Add(time.Hour)) {
			delete(s.deviceCodes, k)
		}
	}
}

// ApproveDeviceCodes approves every pending, unexpired device code as upn (a user
// of the directory, or any account in one of the tenant's domains, such as a
// service account) and returns how many it approved.
func (s *Server) ApproveDeviceCodes(upn string) int {
	if _, _, ok := s.identity(upn); !ok {
		return 0
	}
	now := s.clock.Now()
	n := 0
	s.authMu.Lock()
	for _, dc := range s.deviceCodes {
		if dc.approved == "" && now.Before(dc.expires) {
			dc.approved = strings.ToLower(upn)
			n++
		}
	}
	s.authMu.Unlock()
	s.log.Info("Device codes approved", "upn", upn, "count", n)
	return n
}

// identity gives the object id and display name of an account that may sign in:
// a directory user, or any UPN in one of the tenant's domains (id derived from it).
func (s *Server) identity(upn string) (oid, name string, ok bool) {
	if i, found := s.dir.byUPN[strings.ToLower(upn)]; found {
		u := s.dir.users[i]
		return u.ID, u.DisplayName, true
	}
	at := strings.LastIndexByte(upn, '@')
	if at <= 0 {
		return "", "", false
	}
	for _, d := range s.opts.Domains {
		if strings.EqualFold(upn[at+1:], d) {
			return userID(s.opts.TenantID, upn), upn[:at], true
		}
	}
	return "", "", false
}

// Grant is a refresh token issued to ClientID for UPN (Options.Grants).
type Grant struct {
	RefreshToken, ClientID, UPN, Scope string
}

// refreshGrant is what a refresh token stands for.
type refreshGrant struct {
	clientID string
	upn      string
	scope    string
	lastUsed time.Time
	revoked  bool
}

// RevokeOptions say how RevokeSessions ends the sessions.
type RevokeOptions struct {
	// KeepRefreshTokens leaves the refresh tokens valid, as continuous access
	// evaluation does for a location change: only the access tokens issued so
	// far are refused. Otherwise refresh tokens are revoked too (a password
	// reset, "revoke sessions").
	KeepRefreshTokens bool
	// ClaimsChallenge makes Graph's 401 for a refused token carry a claims
	// challenge (WWW-Authenticate ... error="insufficient_claims", claims=...),
	// as Graph does for continuous access evaluation.
	ClaimsChallenge bool
}

// RevokeSessions makes Graph refuse every access token issued so far with 401
// InvalidAuthenticationToken, although they have not expired (Entra ID's
// continuous access evaluation, a password reset or an admin revoking sessions).
// Tokens issued afterwards are accepted. It returns how many refresh tokens it
// revoked.
func (s *Server) RevokeSessions(o RevokeOptions) int {
	s.authMu.Lock()
	s.sessionGen++
	s.claimsChallenge = o.ClaimsChallenge
	s.authMu.Unlock()
	if o.KeepRefreshTokens {
		s.log.Info("Access tokens revoked")
		return 0
	}
	return s.RevokeRefreshTokens()
}

// ClaimsRequests counts token requests that carried a claims parameter (a client
// answering a claims challenge).
func (s *Server) ClaimsRequests() int {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return s.claimsRequests
}

// tokenGeneration is the generation new access tokens are minted in.
func (s *Server) tokenGeneration() int {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return s.sessionGen
}

// revoked reports whether an access token of generation gen was revoked, and the
// WWW-Authenticate claims challenge to answer with ("" for none).
func (s *Server) revoked(gen int) (bool, string) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if gen >= s.sessionGen {
		return false, ""
	}
	if !s.claimsChallenge {
		return true, ""
	}
	claims := fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"}}}`, s.clock.Now().Unix())
	return true, bearerChallenge + `, error="insufficient_claims", claims="` +
		base64.StdEncoding.EncodeToString([]byte(claims)) + `"`
}

// RevokeRefreshTokens revokes every refresh token (as a password reset or a
// Conditional Access change would) and returns how many were valid. Access tokens
// already issued stay valid until they expire, as in Entra ID.
func (s *Server) RevokeRefreshTokens() int {
	n := 0
	s.authMu.Lock()
	for _, g := range s.refresh {
		if !g.revoked {
			g.revoked = true
			n++
		}
	}
	s.authMu.Unlock()
	s.log.Info("Refresh tokens revoked", "count", n)
	return n
}

func parseForm(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return errors.New("the token endpoint takes POST only")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("read form: %v", err)
	}
	return nil
}

// normaliseScope collapses whitespace; the scopes are echoed in the reply so MSAL
// finds the cached access token for the same scopes again.
func normaliseScope(s string) string { return strings.Join(strings.Fields(s), " ") }

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if !s.tenantOK(r.PathValue("tenant")) {
		writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found.", r.PathValue("tenant")))
		return
	}
	if err := parseForm(w, r); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, err.Error())
		return
	}
	f := r.PostForm
	clientID := f.Get("client_id")
	infoOf(r).app = clientID
	if clientID == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	if f.Get("claims") != "" {
		s.authMu.Lock()
		s.claimsRequests++
		s.authMu.Unlock()
	}
	app, ok := s.apps[clientID]
	if !ok {
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, s.opts.TenantID))
		return
	}
	switch g := f.Get("grant_type"); g {
	case grantDeviceCode, grantDeviceCodeURN:
		s.tokenFromDeviceCode(w, r, app)
	case grantRefreshToken:
		s.tokenFromRefresh(w, r, app)
	case grantClientCredentials:
		s.tokenFromClientCredentials(w, r, app)
	case "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
	default:
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", g))
	}
}

func (s *Server) tokenFromDeviceCode(w http.ResponseWriter, r *http.Request, app *appReg) {
	code := r.PostForm.Get("device_code")
	now := s.clock.Now()
	s.authMu.Lock()
	dc, ok := s.deviceCodes[code]
	var upn string
	status := "pending"
	switch {
	case !ok || dc.clientID != app.ClientID:
		status = "unknown"
	case !now.Before(dc.expires):
		status = "expired"
	default:
		if dc.approved == "" && s.opts.DeviceCodeApproveAfter > 0 && now.Sub(dc.created) >= s.opts.DeviceCodeApproveAfter {
			dc.approved = strings.ToLower(s.opts.DeviceCodeUPN)
		}
		if dc.approved != "" {
			status, upn = "approved", dc.approved
			delete(s.deviceCodes, code) // a device code is redeemed once
		}
	}
	s.authMu.Unlock()
	switch status {
	case "unknown":
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", 70000, "The provided value for the input parameter 'device_code' is not valid.")
	case "expired":
		writeOAuthError(w, http.StatusBadRequest, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. This device code has expired.")
	case "pending":
		writeOAuthError(w, http.StatusBadRequest, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
	default:
		s.writeUserToken(w, r, app.ClientID, upn, dc.scope, "device_code")
	}
}

func (s *Server) tokenFromRefresh(w http.ResponseWriter, r *http.Request, app *appReg) {
	rt := r.PostForm.Get("refresh_token")
	now := s.clock.Now()
	s.authMu.Lock()
	g, ok := s.refresh[rt]
	var bad string
	switch {
	case rt == "" || !ok:
		bad = "unknown"
	case g.clientID != app.ClientID:
		bad = "client"
	case g.revoked:
		bad = "revoked"
	case now.Sub(g.lastUsed) > s.opts.RefreshTokenLifetime:
		bad = "expired"
	default:
		g.lastUsed = now
		if s.opts.StrictRefreshRotation {
			g.revoked = true
		}
	}
	s.authMu.Unlock()
	switch bad {
	case "unknown":
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid. (The refresh token is not one this tenant issued.)")
		return
	case "client":
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", 70000, "Provided grant is invalid or malformed. (The refresh token was issued to a different client.)")
		return
	case "revoked", "expired":
		s.log.Info("Refresh token refused", "client_id", app.ClientID, "reason", bad)
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", 70008,
			"The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
		return
	}
	scope := normaliseScope(r.PostForm.Get("scope"))
	if scope == "" {
		scope = g.scope
	}
	s.writeUserToken(w, r, app.ClientID, g.upn, scope, "refresh_token")
}

// writeUserToken answers a delegated grant the way Entra ID does: access token,
// rotated refresh token, id_token and client_info (MSAL caches an account only
// with both).
func (s *Server) writeUserToken(w http.ResponseWriter, r *http.Request, clientID, upn, scope, grant string) {
	oid, name, ok := s.identity(upn)
	if !ok {
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant", 50034, fmt.Sprintf("The user account %s does not exist in the %s directory.", upn, s.opts.TenantID))
		return
	}
	now := s.clock.Now()
	life := s.opts.AccessTokenLifetime
	at := s.mintAccessToken(tokenClaims{
		Aud: graphAudience, Iss: base(r) + "/" + s.opts.TenantID + "/v2.0", Iat: now.Unix(), Nbf: now.Unix(),
		Exp: now.Add(life).Unix(), AppID: clientID, Tid: s.opts.TenantID, Oid: oid, Upn: upn,
		Scp: delegatedScp, Idtyp: "user", Uti: randomToken(12),
	})
	rt := randomToken(64)
	s.authMu.Lock()
	s.refresh[rt] = &refreshGrant{clientID: clientID, upn: upn, scope: scope, lastUsed: now}
	s.authMu.Unlock()
	idToken := unsignedJWT(map[string]any{
		"aud": clientID, "iss": base(r) + "/" + s.opts.TenantID + "/v2.0", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "oid": oid, "sub": oid, "tid": s.opts.TenantID,
		"preferred_username": upn, "name": name, "ver": "2.0",
	})
	ci, _ := json.Marshal(map[string]string{"uid": oid, "utid": s.opts.TenantID})
	s.log.Info("Token issued", "grant", grant, "client_id", clientID, "upn", upn)
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"scope":          scope,
		"expires_in":     int(life / time.Second),
		"ext_expires_in": int(life / time.Second),
		"access_token":   at,
		"refresh_token":  rt,
		"id_token":       idToken,
		// MSAL for Go decodes client_info with base64.RawURLEncoding: no padding.
		"client_info": base64.RawURLEncoding.EncodeToString(ci),
	})
}

func (s *Server) tokenFromClientCredentials(w http.ResponseWriter, r *http.Request, app *appReg) {
	f := r.PostForm
	switch {
	case f.Get("client_assertion") != "":
		if t := f.Get("client_assertion_type"); t != assertionTypeJWT {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144,
				fmt.Sprintf("The client_assertion_type '%s' is not supported; use '%s'.", t, assertionTypeJWT))
			return
		}
		if len(app.certs) == 0 {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", 700027,
				fmt.Sprintf("Client assertion failed signature validation. (The app '%s' has no certificate registered.)", app.ClientID))
			return
		}
		if err := s.verifyAssertion(f.Get("client_assertion"), app, r); err != nil {
			s.log.Info("Client assertion refused", "client_id", app.ClientID, "reason", err.Error())
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation. ("+err.Error()+")")
			return
		}
	case f.Get("client_secret") != "":
		if app.Secret == "" || subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(app.Secret)) != 1 {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", 7000215,
				fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", app.ClientID))
			return
		}
	default:
		writeOAuthError(w, http.StatusBadRequest, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	var resource []string
	for _, sc := range strings.Fields(f.Get("scope")) {
		switch sc {
		case "openid", "profile", "offline_access", "email":
			continue // MSAL adds these to every request
		}
		resource = append(resource, sc)
	}
	if len(resource) != 1 || !strings.HasSuffix(resource[0], "/.default") {
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", 1002012,
			fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", strings.Join(resource, " ")))
		return
	}
	now := s.clock.Now()
	life := s.opts.AccessTokenLifetime
	at := s.mintAccessToken(tokenClaims{
		Aud: graphAudience, Iss: base(r) + "/" + s.opts.TenantID + "/v2.0", Iat: now.Unix(), Nbf: now.Unix(),
		Exp: now.Add(life).Unix(), AppID: app.ClientID, Tid: s.opts.TenantID, Oid: userID(s.opts.TenantID, "sp:"+app.ClientID),
		Roles: s.rolesOf(app), Idtyp: "app", Uti: randomToken(12),
	})
	s.log.Info("Token issued", "grant", grantClientCredentials, "client_id", app.ClientID)
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     int(life / time.Second),
		"ext_expires_in": int(life / time.Second),
		"access_token":   at,
	})
}

// rolesOf is a copy of the application permissions app's tokens carry now.
func (s *Server) rolesOf(app *appReg) []string {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return slices.Clone(app.roles)
}

// SetAppRole grants (granted) or withdraws the application permission role (an
// app role such as RolePresenceWrite, Presence.Read.All or Application.Read.All)
// of the app registration clientID, as an admin granting or revoking consent.
// As in Entra ID, a token carries the roles of the moment it was issued: tokens
// issued before keep theirs until they expire, unless RevokeSessions makes the
// client fetch new ones.
func (s *Server) SetAppRole(clientID, role string, granted bool) error {
	app, ok := s.apps[clientID]
	if !ok {
		return fmt.Errorf("graphsim: no app %q registered: %w", clientID, ErrUnknownApp)
	}
	if role == "" {
		return errors.New("graphsim: the role is empty; name an application permission such as " + RolePresenceWrite)
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	i := slices.Index(app.roles, role)
	switch {
	case granted && i < 0:
		app.roles = append(app.roles, role)
	case !granted && i >= 0:
		app.roles = slices.Delete(app.roles, i, i+1)
	}
	s.log.Info("App role changed", "client_id", clientID, "role", role, "granted", granted)
	return nil
}

// ErrUnknownApp means the client id is not an app registration of the tenant.
var ErrUnknownApp = errors.New("app not registered in the simulated tenant")

// AppToken issues an application access token for a registered app without the
// token endpoint, for tests of Graph clients that do not exercise sign-in. It
// carries the app's roles, as a client-credentials token would.
func (s *Server) AppToken(clientID string) (string, error) {
	app, ok := s.apps[clientID]
	if !ok {
		return "", fmt.Errorf("graphsim: no app %q registered", clientID)
	}
	now := s.clock.Now()
	return s.mintAccessToken(tokenClaims{
		Aud: graphAudience, Iss: s.URL() + "/" + s.opts.TenantID + "/v2.0", Iat: now.Unix(), Nbf: now.Unix(),
		Exp: now.Add(s.opts.AccessTokenLifetime).Unix(), AppID: clientID, Tid: s.opts.TenantID,
		Oid: userID(s.opts.TenantID, "sp:"+clientID), Roles: s.rolesOf(app), Idtyp: "app", Uti: randomToken(12),
	}), nil
}

// verifyAssertion checks a client assertion (RFC 7523) against the app's
// certificates. MSAL for Go signs with PS256 and an x5t#S256 header for Entra
// authorities (RS256 and x5t for ADFS); both are accepted. Validity times are
// checked against the wall clock, because the client signs with its wall clock.
func (s *Server) verifyAssertion(assertion string, app *appReg, r *http.Request) error {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return errors.New("the assertion is not a JWT")
	}
	var hdr struct {
		Alg     string `json:"alg"`
		X5t     string `json:"x5t"`
		X5tS256 string `json:"x5t#S256"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	var cl struct {
		Aud any    `json:"aud"`
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
		Nbf int64  `json:"nbf"`
	}
	if err := decodeSegment(parts[1], &cl); err != nil {
		return fmt.Errorf("claims: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return errors.New("the signature is not base64url")
	}
	certs := app.certs
	if hdr.X5tS256 != "" || hdr.X5t != "" {
		certs = nil
		for _, c := range app.certs {
			s256 := sha256.Sum256(c.Raw)
			s1 := sha1.Sum(c.Raw) //nolint:gosec
			if thumbMatch(hdr.X5tS256, s256[:]) || thumbMatch(hdr.X5t, s1[:]) {
				certs = append(certs, c)
			}
		}
		if len(certs) == 0 {
			return errors.New("the key was not found: no certificate with that thumbprint is registered for the app")
		}
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	verified := false
	for _, c := range certs {
		pub, ok := c.PublicKey.(*rsa.PublicKey)
		if !ok {
			continue
		}
		switch hdr.Alg {
		case "RS256":
			verified = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
		case "PS256":
			verified = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
		default:
			return fmt.Errorf("algorithm %q is not supported; use RS256 or PS256", hdr.Alg)
		}
		if verified {
			break
		}
	}
	if !verified {
		return errors.New("the signature does not verify with the app's certificate")
	}
	if cl.Iss != app.ClientID || cl.Sub != app.ClientID {
		return fmt.Errorf("iss and sub must be the client id %q", app.ClientID)
	}
	if !s.audienceOK(cl.Aud, r) {
		return errors.New("aud must be this tenant's token endpoint")
	}
	now := time.Now()
	const skew = 5 * time.Minute
	if cl.Exp == 0 || now.Add(-skew).After(time.Unix(cl.Exp, 0)) {
		return errors.New("the assertion has expired")
	}
	if cl.Nbf != 0 && now.Add(skew).Before(time.Unix(cl.Nbf, 0)) {
		return errors.New("the assertion is not valid yet")
	}
	return nil
}

func thumbMatch(got string, want []byte) bool {
	if got == "" {
		return false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(got); err == nil && hmac.Equal(b, want) {
			return true
		}
	}
	return false
}

func (s *Server) audienceOK(aud any, r *http.Request) bool {
	var auds []string
	switch a := aud.(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, v := range a {
			if str, ok := v.(string); ok {
				auds = append(auds, str)
			}
		}
	}
	for _, a := range auds {
		u, err := url.Parse(a)
		if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
			continue
		}
		p := strings.Split(strings.Trim(u.Path, "/"), "/")
		if len(p) >= 1 && s.tenantOK(p[0]) && (len(p) == 1 || strings.EqualFold(strings.Join(p[1:], "/"), "oauth2/v2.0/token") || strings.EqualFold(strings.Join(p[1:], "/"), "v2.0")) {
			return true
		}
	}
	return false
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return errors.New("not base64url")
	}
	return json.Unmarshal(b, v)
}

func unsignedJWT(claims map[string]any) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	p, _ := json.Marshal(claims)
	return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// tokenClaims are the claims of the simulator's access tokens (a subset of Entra
// ID's v1 Graph tokens).
type tokenClaims struct {
	Aud   string   `json:"aud"`
	Iss   string   `json:"iss"`
	Iat   int64    `json:"iat"`
	Nbf   int64    `json:"nbf"`
	Exp   int64    `json:"exp"`
	AppID string   `json:"appid"`
	Tid   string   `json:"tid"`
	Oid   string   `json:"oid,omitempty"`
	Upn   string   `json:"upn,omitempty"`
	Scp   string   `json:"scp,omitempty"`
	Roles []string `json:"roles,omitempty"`
	Idtyp string   `json:"idtyp"`
	Uti   string   `json:"uti"`
	Gen   int      `json:"xms_gen,omitempty"` // session generation (RevokeSessions)
}

var accessTokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"graphsim"}`))

func (s *Server) mintAccessToken(c tokenClaims) string {
	c.Gen = s.tokenGeneration()
	p, _ := json.Marshal(c)
	signing := accessTokenHeader + "." + base64.RawURLEncoding.EncodeToString(p)
	return signing + "." + base64.RawURLEncoding.EncodeToString(s.tokenMAC(signing))
}

// tokenCache remembers tokens already verified, so a poll of 77 requests a cycle
// does not re-verify the same token 77 times.
type tokenCache struct {
	mu sync.RWMutex
	m  map[string]*tokenClaims
}

const tokenCacheLimit = 4096

// verifyAccessToken checks signature and tenant (not expiry: the caller checks
// that against the clock on every request). On failure it returns the message
// Graph would put in its InvalidAuthenticationToken error.
func (s *Server) verifyAccessToken(tok string) (c *tokenClaims, problem string) {
	s.tokens.mu.RLock()
	c, ok := s.tokens.m[tok]
	s.tokens.mu.RUnlock()
	if ok {
		return c, ""
	}
	i := strings.LastIndexByte(tok, '.')
	if i < 0 || strings.Count(tok, ".") != 2 {
		return nil, "IDX14100: JWT is not well formed, there are no dots (.)."
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil || !hmac.Equal(sig, s.tokenMAC(tok[:i])) {
		return nil, "Access token validation failure. Invalid audience or signature."
	}
	j := strings.IndexByte(tok, '.')
	c = &tokenClaims{}
	if err := decodeSegment(tok[j+1:i], c); err != nil {
		return nil, "Access token validation failure. The token payload is not JSON."
	}
	if c.Tid != s.opts.TenantID {
		return nil, "Access token validation failure. The token was issued for a different tenant."
	}
	s.tokens.mu.Lock()
	if s.tokens.m == nil || len(s.tokens.m) >= tokenCacheLimit {
		s.tokens.m = make(map[string]*tokenClaims)
	}
	s.tokens.m[tok] = c
	s.tokens.mu.Unlock()
	return c, ""
}
