// Package graphsim is a simulated Microsoft tenant: login (OpenID discovery, device
// code, refresh tokens, client credentials) and the Graph calls presencebridge makes:
// user lookups (GET /users/{id | upn} and /users?$filter=userPrincipalName or mail
// eq/in, at top level and in a $batch; guests and users whose mail is not their
// UPN through Options.ExtraUsers; see lookup.go), getPresencesByUserId and
// /users/{id}/presence (each presence with a sequenceNumber; ServeStale answers a
// user's older presence once), and writing presence with setPresence and
// clearPresence (application sessions aggregated with each user's own state, see
// sessions.go). Graph's throttles are two, as Microsoft's are: presence requests
// per app per window, and directory reads in resource units per 10 s per app
// (per request inside a $batch, or the $batch whole on cue). Scripted faults and
// a presence pattern engine that scales to 50,000 users complete it. It serves
// HTTPS on loopback with a CA generated in memory, so MSAL for Go runs against it
// unchanged (with instance discovery off). It backs the demo (`presencebridge
// simulate`), the tests and the benchmarks.
package graphsim

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
)

// Defaults of Options.
const (
	DefaultTenantID       = "4f1c3c57-0b5e-4d0e-9a55-3b1a7f0e2c11"
	DefaultDomain         = "contoso.example"
	DefaultUsers          = 100
	DefaultPublicApp      = "presencebridge-demo"
	DefaultDaemonApp      = "presencebridge-daemon"
	DefaultDaemonSecret   = "sim-secret"
	DefaultThrottleLimit  = 1500 // getPresencesByUserId page: 1,500 requests / 30 s / app / tenant
	DefaultThrottleWindow = 30 * time.Second
	DefaultTokenLifetime  = time.Hour // MSAL does not cache tokens expiring within 5 minutes
	DefaultEngineTick     = 100 * time.Millisecond
	DefaultDeviceCodeLife = 15 * time.Minute // Entra ID's device codes live 15 minutes
	DefaultRefreshLife    = 90 * 24 * time.Hour
	// DefaultDeviceCodeUser is the local part of DeviceCodeUPN's default: the
	// service account is DefaultDeviceCodeUser + "@" + the first domain.
	DefaultDeviceCodeUser = "presence.svc"
)

// App is an app registration in the simulated tenant.
type App struct {
	ClientID string `json:"clientId"`
	// Secret is the client secret; empty means the app has none.
	Secret string `json:"-"`
	// CertPEM holds the public certificate(s) the app signs client assertions with.
	CertPEM []byte `json:"-"`
	// Public allows public client flows (device code) for this app.
	Public bool `json:"public"`
	// Roles are the application permissions its tokens carry; nil means
	// Presence.Read.All, Presence.ReadWrite.All and User.ReadBasic.All (admin
	// consent given). Server.SetAppRole and POST /_sim/approle change them while
	// the tenant runs (e.g. withdraw RolePresenceWrite to have setPresence
	// answer 403).
	Roles []string `json:"roles,omitempty"`
	// SecretExpires is the endDateTime of the client secret, shown to a caller
	// with Application.Read.All; zero means two years after the tenant started.
	SecretExpires time.Time `json:"secretExpires,omitzero"`
}

// Options configure a simulated tenant. The zero value is usable.
type Options struct {
	// Addr is the loopback address to listen on; default "127.0.0.1:0". Anything
	// but a loopback address is refused: the simulator is for this machine only.
	Addr string
	// TenantID is the directory (tenant) id; default DefaultTenantID.
	TenantID string
	// Domains are the verified domains; users are spread over them round-robin.
	// Default {"contoso.example"}.
	Domains []string
	// Users is the number of generated users user00001@<domain> ...; default 100.
	Users int
	// ExtraUsers are added to the directory after the generated users, with
	// their UPN, Mail and DisplayName as given (the ID is derived from the UPN
	// like the generated users'): users whose UPN is not their address
	// (j.smith@contoso.example with mail john.smith@contoso.example), guests
	// (ann_fabrikam.example#EXT#@contoso.example with mail ann@fabrikam.example),
	// users without mail, or two users sharing one mail. Each has presence like
	// the others.
	ExtraUsers []User
	// Apps are the app registrations; default a public app "presencebridge-demo"
	// and a confidential app "presencebridge-daemon" with secret "sim-secret".
	Apps []App
	// ThrottleLimit is how many Graph requests one (tenant, app) may make within
	// ThrottleWindow; default 1500; negative turns the throttle off.
	ThrottleLimit int
	// ThrottleWindow is the sliding window of the throttle; default 30s.
	// This throttle applies to presence requests: getPresencesByUserId,
	// /users/{id}/presence (also inside a $batch), setPresence, clearPresence.
	ThrottleWindow time.Duration
	// DirectoryLimit is the directory throttle: the resource units one app may
	// spend on directory reads (/users/{id}, /users?$filter=..., also inside a
	// $batch, and /applications) within DirectoryWindow (10 s); default by the
	// number of users (DirectoryLimitSmall under 50, DirectoryLimitMedium under
	// 500, else DirectoryLimitLarge); negative turns it off. See directoryCost
	// for what a read costs.
	DirectoryLimit int
	// DirectoryWholeBatch makes the directory throttle refuse a $batch as a
	// whole (429 on the outer request) instead of its requests one by one; see
	// DirectoryThrottle.WholeBatch.
	DirectoryWholeBatch bool
	// ChangesPerUserPerHour is the pattern engine's rate; 0 keeps presence static
	// (it then changes only through SetPresence).
	ChangesPerUserPerHour float64
	// EngineTick is how often the engine goroutine steps; default 100ms.
	EngineTick time.Duration
	// ManualEngine keeps the engine goroutine from starting: presence then moves
	// only when the caller calls Step (deterministic tests).
	ManualEngine bool
	// DeviceCodeApproveAfter auto-approves a pending device code (as DeviceCodeUPN)
	// once it is this old; 0 means only ApproveDeviceCodes approves.
	DeviceCodeApproveAfter time.Duration
	// DeviceCodeUPN is who auto-approved device codes sign in as; default
	// DefaultDeviceCodeUser + "@" + the first domain.
	DeviceCodeUPN string
	// DeviceCodeLifetime is how long a device code can be redeemed; default 15m.
	DeviceCodeLifetime time.Duration
	// AccessTokenLifetime is the expires_in of access tokens; default 1h.
	AccessTokenLifetime time.Duration
	// RefreshTokenLifetime is how long an unused refresh token lives; default 90 days.
	RefreshTokenLifetime time.Duration
	// StrictRefreshRotation makes a redeemed refresh token invalid at once (Entra
	// ID keeps it valid; turn this on to catch a client that loses rotated tokens).
	StrictRefreshRotation bool
	// Grants are refresh tokens a tenant of an earlier run issued, valid here
	// too: a client's state file from that run signs in again without a new
	// device-code sign-in (tests of a state file written by an older release).
	Grants []Grant
	// Seed makes the initial presence and the pattern engine reproducible.
	Seed int64
	// Clock drives throttle windows, token and device-code expiry, change times
	// and the engine; default clock.Real{}.
	Clock clock.Clock
	// Logger receives what the simulator does; default discards.
	Logger *slog.Logger
}

// Server is one simulated tenant.
type Server struct {
	born   time.Time // when New ran (on the clock): start of the secrets' lifetime
	opts   Options
	clock  clock.Clock
	log    *slog.Logger
	tls    *serverTLS
	apps   map[string]*appReg
	dir    *directory
	engine *engine
	mux    *http.ServeMux

	transport *http.Transport // behind Client()

	tokenKey []byte // HMAC key of access tokens
	tokens   tokenCache

	throttle      throttle // presence requests
	dirThrottle   throttle // directory reads, in resource units
	dirWholeBatch atomic.Bool
	faults        faultQueue
	stats         statsRecorder

	authMu      sync.Mutex
	deviceCodes map[string]*deviceCode // by device_code
	refresh     map[string]*refreshGrant
	// Access tokens carry the session generation they were minted in; those of
	// a generation before the current one are refused (RevokeSessions starts a
	// new one).
	sessionGen      int
	claimsChallenge bool // a refused token's 401 carries a claims challenge
	claimsRequests  int  // token requests that carried claims

	mu      sync.Mutex // guards the fields below
	srv     *http.Server
	url     string
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type appReg struct {
	App
	certs []*x509.Certificate
	roles []string // the roles its tokens carry now; Server.authMu (SetAppRole)
}

// New builds a simulated tenant from opts (defaults filled in); Start serves it.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if err := checkLoopback(opts.Addr); err != nil {
		return nil, err
	}
	if opts.TenantID == "" {
		opts.TenantID = DefaultTenantID
	}
	opts.TenantID = strings.ToLower(opts.TenantID)
	opts.Domains = append([]string(nil), opts.Domains...) // not the caller's slice
	if len(opts.Domains) == 0 {
		opts.Domains = []string{DefaultDomain}
	}
	for i, d := range opts.Domains {
		opts.Domains[i] = strings.ToLower(strings.TrimSpace(d))
		if opts.Domains[i] == "" || strings.ContainsAny(opts.Domains[i], "@/ ") {
			return nil, fmt.Errorf("graphsim: domain %q is not a domain name", d)
		}
	}
	if opts.Users < 0 {
		return nil, fmt.Errorf("graphsim: Users is %d, want 0 (default %d) or more", opts.Users, DefaultUsers)
	}
	if opts.Users == 0 {
		opts.Users = DefaultUsers
	}
	opts.ExtraUsers = slices.Clone(opts.ExtraUsers)
	for _, u := range opts.ExtraUsers {
		if at := strings.LastIndexByte(u.UPN, '@'); at <= 0 || at == len(u.UPN)-1 || strings.ContainsAny(u.UPN, " /?\t\r\n") {
			return nil, fmt.Errorf("graphsim: ExtraUsers: the UPN %q is not a user principal name (want local@domain, no spaces or slashes)", u.UPN)
		}
	}
	if len(opts.Apps) == 0 {
		opts.Apps = []App{
			{ClientID: DefaultPublicApp, Public: true},
			{ClientID: DefaultDaemonApp, Secret: DefaultDaemonSecret},
		}
	}
	if opts.ThrottleLimit == 0 {
		opts.ThrottleLimit = DefaultThrottleLimit
	}
	if opts.ThrottleWindow <= 0 {
		opts.ThrottleWindow = DefaultThrottleWindow
	}
	if opts.ChangesPerUserPerHour < 0 {
		return nil, fmt.Errorf("graphsim: ChangesPerUserPerHour is %v, want 0 or more", opts.ChangesPerUserPerHour)
	}
	if opts.EngineTick <= 0 {
		opts.EngineTick = DefaultEngineTick
	}
	if opts.DeviceCodeUPN == "" {
		opts.DeviceCodeUPN = DefaultDeviceCodeUser + "@" + opts.Domains[0]
	}
	if opts.DeviceCodeLifetime <= 0 {
		opts.DeviceCodeLifetime = DefaultDeviceCodeLife
	}
	if opts.AccessTokenLifetime <= 0 {
		opts.AccessTokenLifetime = DefaultTokenLifetime
	}
	if opts.RefreshTokenLifetime <= 0 {
		opts.RefreshTokenLifetime = DefaultRefreshLife
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}

	s := &Server{
		opts:        opts,
		born:        opts.Clock.Now(),
		clock:       opts.Clock,
		log:         opts.Logger,
		apps:        map[string]*appReg{},
		deviceCodes: map[string]*deviceCode{},
		refresh:     map[string]*refreshGrant{},
	}
	for _, g := range opts.Grants {
		s.refresh[g.RefreshToken] = &refreshGrant{clientID: g.ClientID, upn: g.UPN, scope: g.Scope, lastUsed: s.born}
	}
	for _, a := range opts.Apps {
		if a.ClientID == "" {
			return nil, errors.New("graphsim: an App has an empty ClientID")
		}
		if _, dup := s.apps[a.ClientID]; dup {
			return nil, fmt.Errorf("graphsim: app %q is listed twice", a.ClientID)
		}
		reg := &appReg{App: a, roles: slices.Clone(a.Roles)}
		if a.Roles == nil {
			reg.roles = slices.Clone(appRoles)
		}
		if len(a.CertPEM) > 0 {
			certs, err := parseCerts(a.CertPEM)
			if err != nil {
				return nil, fmt.Errorf("graphsim: CertPEM of app %q: %w", a.ClientID, err)
			}
			reg.certs = certs
		}
		s.apps[a.ClientID] = reg
	}

	var err error
	if s.tls, err = newServerTLS(time.Now()); err != nil {
		return nil, fmt.Errorf("graphsim: %w", err)
	}
	s.transport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: s.tls.pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	s.tokenKey = make([]byte, 32)
	if _, err := crand.Read(s.tokenKey); err != nil {
		return nil, fmt.Errorf("graphsim: token key: %w", err)
	}

	pairs := newPairTable(enginePairs[:])
	if s.dir, err = newDirectory(opts.TenantID, opts.Domains, opts.Users, opts.ExtraUsers, pairs); err != nil {
		return nil, err
	}
	seed := uint64(opts.Seed)
	initRng := rand.New(rand.NewPCG(seed, 0x6772617068))
	for i := range s.dir.state {
		s.dir.init(int32(i), pick(initRng, initialWeights))
	}
	s.engine = &engine{rate: opts.ChangesPerUserPerHour, rng: rand.New(rand.NewPCG(seed, 0x656e67696e65))}
	s.throttle.init(opts.ThrottleLimit, opts.ThrottleWindow)
	if opts.DirectoryLimit == 0 {
		opts.DirectoryLimit = directoryLimitFor(len(s.dir.users))
		s.opts.DirectoryLimit = opts.DirectoryLimit
	}
	s.dirThrottle.init(opts.DirectoryLimit, DirectoryWindow)
	s.dirWholeBatch.Store(opts.DirectoryWholeBatch)
	s.stats.init()
	s.routes()
	return s, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("graphsim: Addr %q: %w (want host:port, e.g. 127.0.0.1:0)", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("graphsim: Addr %q is not a loopback address; the simulated tenant listens on 127.0.0.1, ::1 or localhost only", addr)
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// Start listens on Options.Addr and serves HTTPS in the background; it also starts
// the pattern engine goroutine when ChangesPerUserPerHour > 0 and ManualEngine is off.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("graphsim: Start called twice or after Close")
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("graphsim: listen on %s: %w", s.opts.Addr, err)
	}
	s.started = true
	s.url = "https://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.tls.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("Simulated tenant stopped serving", "err", err)
		}
	}()
	if s.opts.ChangesPerUserPerHour > 0 && !s.opts.ManualEngine {
		s.wg.Add(1)
		from := s.clock.Now()
		go func() {
			defer s.wg.Done()
			s.runEngine(ctx, from)
		}()
	}
	s.log.Info("Simulated tenant listening", "url", s.url, "tenant", s.opts.TenantID,
		"users", len(s.dir.users), "changes_per_user_per_hour", s.opts.ChangesPerUserPerHour)
	return nil
}

// Close stops serving and the engine, and waits for both. It may be called twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.started || s.closed {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, cancel := s.srv, s.cancel
	s.mu.Unlock()
	cancel()
	err := srv.Close()
	s.wg.Wait()
	s.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("graphsim: close: %w", err)
	}
	return nil
}

// URL is the base URL, "https://127.0.0.1:PORT"; empty before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Authority is the MSAL authority, URL()+"/"+TenantID.
func (s *Server) Authority() string { return s.URL() + "/" + s.opts.TenantID }

// GraphURL is the Graph base, URL()+"/v1.0".
func (s *Server) GraphURL() string { return s.URL() + "/v1.0" }

// TenantID is the simulated tenant's id.
func (s *Server) TenantID() string { return s.opts.TenantID }

// CAPEM is the PEM of the CA that signed the server certificate: trust it (and only
// it) in clients of the simulator.
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.tls.caPEM...) }

// CertPool is a pool holding the simulator's CA.
func (s *Server) CertPool() *x509.CertPool { return s.tls.pool.Clone() }

// Client returns an *http.Client that trusts the simulator's CA (and nothing
// else), for tests and tools. Clients share one transport, closed with the Server.
func (s *Server) Client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: s.transport}
}

// Handler is the simulator's HTTP handler (the same one Start serves), for callers
// that want to mount it in their own server or call it in-process.
func (s *Server) Handler() http.Handler { return s }

// Users lists the simulated directory.
func (s *Server) Users() []User { return append([]User(nil), s.dir.users...) }

// SetPresence sets a user's own presence, as if the user's Teams client changed it
// (the client state the aggregation starts from; not a user-preferred override),
// and returns when the change became visible. Any non-empty strings are accepted
// (so tests can send camelCase or unknown values). When what Graph shows does not
// change (the same pair again, or an application's session outranks it; see
// aggregate) no change is recorded and it returns the time of the user's last
// visible change (zero if it never changed).
func (s *Server) SetPresence(upn, availability, activity string) (time.Time, error) {
	if availability == "" || activity == "" {
		return time.Time{}, errors.New("graphsim: availability and activity must not be empty")
	}
	u, ok := s.dir.lookup(upn)
	if !ok {
		return time.Time{}, fmt.Errorf("graphsim: %q: %w", upn, ErrUnknownUser)
	}
	p := s.dir.pairs.intern(availability, activity)
	s.dir.changeMu.Lock()
	at := s.clock.Now().UnixNano()
	s.dir.expireLocked(at)
	if !s.dir.setClient(u, p, at) {
		at = s.dir.changedAt[u].Load()
	}
	s.dir.changeMu.Unlock()
	if at == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, at).UTC(), nil
}

// Presence reports a user's current presence (UPN or object id) as Graph shows
// it: the aggregate of the user's own state and the applications' sessions.
func (s *Server) Presence(upn string) (availability, activity string, ok bool) {
	u, ok := s.dir.lookup(upn)
	if !ok {
		return "", "", false
	}
	s.expireSessions()
	p := s.dir.pairs.get(s.dir.shownPair(u))
	return p.availability, p.activity, true
}

// SequenceNumber is the sequenceNumber Graph shows with a user's current
// presence (UPN or object id): 16 hex digits that grow with every change of
// what the user shows, so a lower one (as strings) is older.
func (s *Server) SequenceNumber(upn string) (string, bool) {
	u, ok := s.dir.lookup(upn)
	if !ok {
		return "", false
	}
	s.expireSessions()
	return s.dir.sequence(s.dir.state[u].Load()), true
}

// ErrNoOlderPresence: ServeStale was asked for a user whose presence never
// changed, so there is no older one to serve.
var ErrNoOlderPresence = errors.New("the user's presence never changed: there is no older one to serve")

// ServeStale makes the next presence read of a user (UPN or object id;
// getPresencesByUserId or /users/{id}/presence, in a $batch too) answer the
// user's previous presence with its older sequenceNumber, once, as a reply
// overtaken in flight by a newer one would arrive; the reads after it show
// the current presence again. It returns the older sequenceNumber served.
func (s *Server) ServeStale(upn string) (string, error) {
	u, ok := s.dir.lookup(upn)
	if !ok {
		return "", fmt.Errorf("graphsim: %q: %w", upn, ErrUnknownUser)
	}
	s.expireSessions()
	s.dir.changeMu.Lock()
	cur, prev := s.dir.state[u].Load(), s.dir.prev[u]
	s.dir.changeMu.Unlock()
	if changesOf(cur) == 0 {
		return "", fmt.Errorf("graphsim: %q: %w", upn, ErrNoOlderPresence)
	}
	s.dir.staleMu.Lock()
	if _, pending := s.dir.stale[u]; !pending {
		s.dir.staleN.Add(1)
	}
	s.dir.stale[u] = prev
	s.dir.staleMu.Unlock()
	seq := s.dir.sequence(prev)
	p := s.dir.pairs.get(pairOf(prev))
	s.log.Info("Stale presence queued", "upn", s.dir.users[u].UPN, "availability", p.availability, "activity", p.activity, "sequence", seq)
	return seq, nil
}

// Changes lists the presence changes Graph showed after since (all when since is
// zero), oldest first: the users' own changes and those the applications'
// sessions made (set, cleared, expired). The record keeps the most recent
// changes (at least 500,000).
func (s *Server) Changes(since time.Time) []Change {
	s.expireSessions()
	return s.dir.changesSince(since)
}

// tokenMAC signs data with the server's access token key.
func (s *Server) tokenMAC(data string) []byte {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte(data))
	return m.Sum(nil)
}
