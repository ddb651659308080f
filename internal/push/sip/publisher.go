// Package sip publishes presence to a SIP presence server (the PBX) with PUBLISH
// (RFC 3903, Event: presence) and a PIDF body (RFC 3863 with RPID, RFC 4480).
//
// Entity tags follow RFC 3903: the first PUBLISH of a user creates a publication and
// the server's SIP-ETag is kept; later states modify it with SIP-If-Match; a refresh
// before it expires carries SIP-If-Match and no body; a user who leaves is removed
// with Expires: 0. A conditional PUBLISH the server refuses (412, or the 500 that
// Kamailio 5.6 sends for an ETag it does not know) starts the publication over.
// ETags are kept in the state file, so a restart modifies or removes the
// publications made before it instead of leaving them to expire.
package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"golang.org/x/time/rate"

	"github.com/presencebridge/presencebridge/internal/clock"
	"github.com/presencebridge/presencebridge/internal/push"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Options configure a Publisher.
type Options struct {
	Transport     string // udp (default), tcp or tls
	Server        string // host:port of the presence server
	OutboundProxy string // host:port; when set, every request is sent there with a Route header
	FromURI       string // From identity; default each user's own SIP URI
	Username      string // digest credentials for 401/407
	Password      string
	CAFile        string // extra CA for tls
	ServerName    string // TLS name to verify, if not the host of Server/OutboundProxy
	Expires       time.Duration
	Concurrency   int
	Rate          float64 // PUBLISH requests per second
	Timeout       time.Duration
	// ETags keeps publications across restarts; nil keeps them in memory only.
	ETags  ETagStore
	Clock  clock.Clock
	Logger *slog.Logger
}

// Publication is what the server holds for one user.
type Publication struct {
	ETag    string    `json:"etag"`
	Expires time.Time `json:"expires"`
	// Granted is the lifetime the server gave; the refresh comes in its last 20%.
	Granted time.Duration `json:"granted"`
	Body    []byte        `json:"body,omitempty"`
	// Transport and Dest identify the server it was made at; a change of either in
	// Presence.ini makes the publication unusable.
	Transport string `json:"transport"`
	Dest      string `json:"dest"`
}

// ETagStore persists publications by SIP URI.
type ETagStore interface {
	LoadPublications() (map[string]Publication, error)
	SavePublication(uri string, p Publication) error
	DeletePublication(uri string) error
}

// Publisher is a push.Target speaking SIP.
type Publisher struct {
	o      Options
	ua     *sipgo.UserAgent
	client *sipgo.Client
	lim    *rate.Limiter
	dest   string
	route  string
	from   *sip.Uri
	log    *slog.Logger

	mu   sync.Mutex
	pubs map[string]*Publication // by SIP URI as written in the users file
	// refreshing guards against a refresh and a new state racing for one user.
	busy map[string]*sync.Mutex
}

// New checks the options and starts a SIP user agent.
func New(o Options) (*Publisher, error) {
	o.Transport = strings.ToLower(o.Transport)
	if o.Transport == "" {
		o.Transport = "udp"
	}
	if o.Transport != "udp" && o.Transport != "tcp" && o.Transport != "tls" {
		return nil, fmt.Errorf("transport %q: use udp, tcp or tls", o.Transport)
	}
	if o.Server == "" {
		return nil, errors.New("no server: set [SIP] Server")
	}
	if o.Expires <= 0 {
		o.Expires = time.Hour
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Rate <= 0 {
		o.Rate = 2000
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	p := &Publisher{o: o, log: o.Logger, pubs: map[string]*Publication{}, busy: map[string]*sync.Mutex{},
		lim: rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/10)))}
	p.dest = o.Server
	if o.OutboundProxy != "" {
		p.dest = o.OutboundProxy
		p.route = "<sip:" + o.OutboundProxy + ";lr"
		if o.Transport != "udp" {
			p.route += ";transport=" + o.Transport
		}
		p.route += ">"
	}
	if o.FromURI != "" {
		var u sip.Uri
		if err := sip.ParseUri(o.FromURI, &u); err != nil {
			return nil, fmt.Errorf("From %q is not a SIP URI: %w", o.FromURI, err)
		}
		p.from = &u
	}

	uaOpts := []sipgo.UserAgentOption{sipgo.WithUserAgent("presencebridge")}
	if o.Transport == "tls" {
		tc, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(tc))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("start SIP user agent: %w", err)
	}
	// sipgo's transport layer logs through its package-wide default logger; route
	// it to ours, errors only (it warns about its own connection bookkeeping).
	sipgoLogger.Do(func() {
		sip.SetDefaultLogger(slog.New(minLevel{o.Logger.Handler(), slog.LevelError}).With("component", "sipgo"))
	})
	quiet := slog.New(minLevel{o.Logger.Handler(), slog.LevelError}).With("component", "sipgo")
	clientOpts := []sipgo.ClientOption{sipgo.WithClientLogger(quiet)}
	if ip := localIPToward(p.dest); ip != "" {
		clientOpts = append(clientOpts, sipgo.WithClientHostname(ip)) // Via and Contact host
	}
	client, err := sipgo.NewClient(ua, clientOpts...)
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("start SIP client: %w", err)
	}
	p.ua, p.client = ua, client
	if o.ETags != nil {
		stored, err := o.ETags.LoadPublications()
		if err != nil {
			ua.Close()
			return nil, fmt.Errorf("read kept SIP publications: %w", err)
		}
		for uri, pub := range stored {
			if pub.Transport == o.Transport && pub.Dest == p.dest {
				pub := pub
				p.pubs[uri] = &pub
			}
		}
	}
	return p, nil
}

// localIPToward is the local address the system would use to reach dest (no
// packet is sent), so the Via header names a reachable address, not 0.0.0.0.
func localIPToward(dest string) string {
	c, err := net.Dial("udp", dest)
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}

func tlsConfig(o Options) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if tc.ServerName == "" {
		host := o.Server
		if o.OutboundProxy != "" {
			host = o.OutboundProxy
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		tc.ServerName = host
	}
	if o.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CAFile: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CAFile %s holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

var sipgoLogger sync.Once

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.level}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.level} }

// Accepts reports whether u has a SIP URI to publish to (push.Accepter).
func (p *Publisher) Accepts(u users.User) bool { return u.SIPURI != "" }

// Name is "sip".
func (p *Publisher) Name() string { return "sip" }

// Close stops the user agent.
func (p *Publisher) Close() error { return p.ua.Close() }

// Published counts the live publications.
func (p *Publisher) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pubs)
}

// Send publishes every item, Concurrency at a time, paced to Rate.
func (p *Publisher) Send(ctx context.Context, items []push.Item) []error {
	errs := make([]error, len(items))
	sem := make(chan struct{}, p.o.Concurrency)
	var wg sync.WaitGroup
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			for j := i; j < len(items); j++ {
				errs[j] = ctx.Err()
			}
			wg.Wait()
			return errs
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = p.publish(ctx, it)
		}()
	}
	wg.Wait()
	return errs
}

func (p *Publisher) lock(uri string) func() {
	p.mu.Lock()
	m := p.busy[uri]
	if m == nil {
		m = &sync.Mutex{}
		p.busy[uri] = m
	}
	p.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (p *Publisher) publication(uri string) *Publication {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pub := p.pubs[uri]; pub != nil {
		c := *pub
		return &c
	}
	return nil
}

func (p *Publisher) keep(uri string, pub *Publication) {
	p.mu.Lock()
	if pub == nil {
		delete(p.pubs, uri)
	} else {
		p.pubs[uri] = pub
	}
	p.mu.Unlock()
	if p.o.ETags == nil {
		return
	}
	var err error
	if pub == nil {
		err = p.o.ETags.DeletePublication(uri)
	} else {
		err = p.o.ETags.SavePublication(uri, *pub)
	}
	if err != nil {
		p.log.Warn("Keeping a SIP publication in the state file failed", "uri", uri, "err", err)
	}
}

func (p *Publisher) publish(ctx context.Context, it push.Item) error {
	uri := it.User.SIPURI
	if uri == "" {
		return push.Permanent("%s has no SIP URI; add one in the users file's SIP URI column", it.User.UPN)
	}
	var target sip.Uri
	if err := sip.ParseUri(uri, &target); err != nil || target.Host == "" {
		return push.Permanent("%s: SIP URI %q is not valid; write it as sip:user@host in the users file", it.User.UPN, uri)
	}
	defer p.lock(uri)()
	pub := p.publication(uri)
	now := p.o.Clock.Now()

	if it.Remove() {
		if pub == nil || !now.Before(pub.Expires) {
			p.keep(uri, nil)
			return nil // nothing left at the server
		}
		res, err := p.request(ctx, target, pub.ETag, nil, 0)
		if err != nil {
			return err
		}
		p.keep(uri, nil)
		if res.IsSuccess() || res.StatusCode == 412 {
			return nil
		}
		return p.refused(uri, res) // the publication expires on its own
	}

	body := PIDF(uri, it.Mapped)
	if pub != nil && pub.ETag != "" && now.Before(pub.Expires) {
		res, err := p.request(ctx, target, pub.ETag, body, p.o.Expires)
		if err != nil {
			return err
		}
		if res.IsSuccess() {
			p.keep(uri, p.published(res, body))
			return nil
		}
		if res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired {
			return p.refused(uri, res)
		}
		// 412, or another refusal of the ETag: start the publication over.
		p.log.Debug("Conditional PUBLISH refused; publishing afresh", "uri", uri, "status", res.StatusCode)
	}
	res, err := p.request(ctx, target, "", body, p.o.Expires)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		p.keep(uri, nil)
		return p.refused(uri, res)
	}
	p.keep(uri, p.published(res, body))
	return nil
}

// published builds the publication a 2xx created or modified.
func (p *Publisher) published(res *sip.Response, body []byte) *Publication {
	exp := p.o.Expires
	if h := res.GetHeader("Expires"); h != nil {
		if s, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && s > 0 {
			exp = time.Duration(s) * time.Second
		}
	}
	pub := &Publication{Expires: p.o.Clock.Now().Add(exp), Granted: exp, Body: body, Transport: p.o.Transport, Dest: p.dest}
	if h := res.GetHeader("SIP-ETag"); h != nil {
		pub.ETag = strings.TrimSpace(h.Value())
	}
	return pub
}

// refused turns a final non-2xx answer into the error the dispatcher acts on.
func (p *Publisher) refused(uri string, res *sip.Response) error {
	switch c := res.StatusCode; {
	case c == sip.StatusUnauthorized || c == sip.StatusProxyAuthRequired:
		if p.o.Username == "" {
			return fmt.Errorf("PUBLISH %s: %d %s: the server asks for credentials; set [SIP] Username and Password", uri, c, res.Reason)
		}
		return fmt.Errorf("PUBLISH %s: %d %s after sending credentials; check [SIP] Username and Password", uri, c, res.Reason)
	case c == sip.StatusNotFound || c == sip.StatusForbidden || c == 489 || c == sip.StatusMethodNotAllowed || c == 416:
		return push.Permanent("PUBLISH %s: %d %s: the server does not accept presence for this URI; check the SIP URI in the users file", uri, c, res.Reason)
	case c >= 500:
		return fmt.Errorf("PUBLISH %s: %d %s: %w", uri, c, res.Reason, push.ErrTargetDown)
	default:
		return fmt.Errorf("PUBLISH %s: %d %s", uri, c, res.Reason)
	}
}

// request sends one PUBLISH and answers a digest challenge once.
func (p *Publisher) request(ctx context.Context, target sip.Uri, ifMatch string, body []byte, expires time.Duration) (*sip.Response, error) {
	if err := p.lim.Wait(ctx); err != nil {
		return nil, err
	}
	req := sip.NewRequest(sip.PUBLISH, target)
	req.SetTransport(strings.ToUpper(p.o.Transport))
	req.SetDestination(p.dest)
	if p.route != "" {
		req.AppendHeader(sip.NewHeader("Route", p.route))
	}
	fromAddr := target
	if p.from != nil {
		fromAddr = *p.from
	}
	from := &sip.FromHeader{Address: fromAddr, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: target, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Event", "presence"))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires/time.Second))))
	if ifMatch != "" {
		req.AppendHeader(sip.NewHeader("SIP-If-Match", ifMatch))
	}
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/pidf+xml"))
	}
	req.SetBody(body)

	// A transaction once started is finished even when presencebridge stops:
	// abandoning it would lose the ETag of a publication the server has made,
	// leaving an orphan that the server aggregates with the next one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.Timeout)
	defer cancel()
	p.log.Debug("PUBLISH", "uri", target.String(), "ifMatch", ifMatch, "body", len(body), "note", noteOf(body))
	res, err := p.client.Do(ctx, req)
	// An outbound proxy (407) and the server behind it (401) may each challenge.
	for try := 0; try < 2 && err == nil && p.o.Username != "" &&
		(res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired); try++ {
		res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.o.Username, Password: p.o.Password})
	}
	if err != nil {
		return nil, p.unreachable(err)
	}
	return res, nil
}

func (p *Publisher) unreachable(err error) error {
	cause := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		cause = "no answer within [SIP] Timeout"
	}
	if strings.Contains(cause, p.o.Password) && p.o.Password != "" {
		cause = "request failed"
	}
	return fmt.Errorf("PUBLISH over %s to %s: %s: %w", p.o.Transport, p.dest, cause, push.ErrTargetDown)
}

// Run refreshes publications before they expire (at about 80% of their life),
// with SIP-If-Match and no body; a refused refresh publishes the body afresh.
func (p *Publisher) Run(ctx context.Context) error {
	const tick = 5 * time.Second // servers may grant less than we ask
	for {
		if err := p.o.Clock.Sleep(ctx, tick); err != nil {
			return nil
		}
		p.RefreshDue(ctx)
	}
}

// RefreshDue refreshes every publication within 20% of its expiry now.
func (p *Publisher) RefreshDue(ctx context.Context) int {
	now := p.o.Clock.Now()
	var due []string
	p.mu.Lock()
	for uri, pub := range p.pubs {
		if p.due(pub, now) {
			due = append(due, uri)
		}
	}
	p.mu.Unlock()
	sem := make(chan struct{}, p.o.Concurrency)
	var wg sync.WaitGroup
	for _, uri := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := p.refresh(ctx, uri); err != nil && ctx.Err() == nil {
				p.log.Warn("Refreshing a SIP publication failed; retried at the next check", "uri", uri, "err", err)
			}
		}()
	}
	wg.Wait()
	return len(due)
}

// due reports whether pub is in the last 20% of the lifetime the server granted.
func (p *Publisher) due(pub *Publication, now time.Time) bool {
	granted := pub.Granted
	if granted <= 0 {
		granted = p.o.Expires
	}
	return pub.Expires.Sub(now) <= granted/5
}

func (p *Publisher) refresh(ctx context.Context, uri string) error {
	defer p.lock(uri)()
	pub := p.publication(uri)
	if pub == nil || !p.due(pub, p.o.Clock.Now()) {
		return nil // removed or renewed meanwhile
	}
	var target sip.Uri
	if err := sip.ParseUri(uri, &target); err != nil {
		p.keep(uri, nil)
		return nil
	}
	if p.o.Clock.Now().Before(pub.Expires) {
		res, err := p.request(ctx, target, pub.ETag, nil, p.o.Expires)
		if err != nil {
			return err
		}
		if res.IsSuccess() {
			np := p.published(res, pub.Body)
			if np.ETag == "" {
				np.ETag = pub.ETag
			}
			p.keep(uri, np)
			return nil
		}
	}
	res, err := p.request(ctx, target, "", pub.Body, p.o.Expires)
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		p.keep(uri, nil)
		return p.refused(uri, res)
	}
	p.keep(uri, p.published(res, pub.Body))
	return nil
}

func noteOf(body []byte) string {
	s := string(body)
	i := strings.Index(s, "<note xml:lang=\"en\">")
	if i < 0 {
		return ""
	}
	s = s[i+len("<note xml:lang=\"en\">"):]
	j := strings.Index(s, "<")
	if j < 0 {
		return ""
	}
	return s[:j]
}
