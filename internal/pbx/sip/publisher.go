// Package sip publishes presence to a SIP presence server (the PBX) with PUBLISH
// (RFC 3903, Event: presence) and a PIDF body (RFC 3863 with RPID, RFC 4480).
//
// Entity tags follow RFC 3903: the first PUBLISH of a user creates a publication and
// the server's SIP-ETag is kept; later states modify it with SIP-If-Match; a refresh
// before it expires carries SIP-If-Match and no body; a user who leaves is removed
// with Expires: 0. A conditional PUBLISH the server refuses (412, or the 500 that
// Kamailio 5.6 sends for an ETag it does not know) starts the publication over.
// With an ETagStore the publications outlive a restart, so the publisher modifies
// or removes the ones it made before instead of leaving a second, stale one behind.
package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Settings are the [SIP] settings of Presence.ini, the publisher's own: config
// decodes the section into them, starting from DefaultSettings, and checks them
// (with the file, line and key in its messages); New takes them as they are.
type Settings struct {
	Transport string // udp, tcp or tls
	// Server is the host:port of the presence server; requests go there unless
	// OutboundProxy is set. Empty: no SIP target.
	Server string
	// OutboundProxy is a host:port every request is sent to, with a
	// Route: <sip:OutboundProxy;lr> header; the Request-URI stays the user's URI.
	OutboundProxy string
	// From is the From identity, e.g. "sip:presencebridge@pbx.example"; empty
	// publishes on behalf of each user (From is the user's own URI).
	From string
	// Username and Password answer 401 and 407 digest challenges. The password
	// never appears in logs or errors.
	Username string
	Password secret.Value
	// CAFile is a PEM file of CAs trusted for tls on top of the system's roots.
	CAFile string
	// ServerName is the name the TLS certificate must carry, if not the host of
	// Server (or OutboundProxy).
	ServerName string
	// Expires is the publication lifetime asked for; the server's answer decides,
	// and publications are refreshed at 80% of it.
	Expires time.Duration
	// Concurrency bounds the PUBLISH transactions in flight.
	Concurrency int
	// Rate is PUBLISH requests per second at most, so a burst of changes cannot
	// flood the PBX.
	Rate float64
	// Timeout bounds each transaction.
	Timeout time.Duration
}

// DefaultSettings are [SIP]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{Transport: "udp", Expires: time.Hour, Concurrency: 32, Rate: 2000, Timeout: 5 * time.Second}
}

// Options configure a Publisher.
type Options struct {
	Settings
	// ETags keeps publications across restarts; nil keeps them in memory only.
	ETags  ETagStore
	Clock  clock.Clock
	Logger *slog.Logger
}

// LogValue keeps the password out of logs.
func (s Settings) LogValue() slog.Value {
	return slog.GroupValue(slog.String("transport", s.Transport), slog.String("server", s.Server),
		slog.String("outboundProxy", s.OutboundProxy), slog.String("from", s.From),
		slog.String("username", s.Username), slog.Bool("password", s.Password != ""))
}

// Publication is what the server holds for one user.
type Publication struct {
	ETag    string    // empty: the state must be published afresh
	Expires time.Time //
	// Lifetime is what the server granted (its Expires), for refreshing at 80%.
	Lifetime time.Duration
	// Shows is the state published; its body is PIDF(uri, Shows), made again when
	// it is needed rather than kept (50,000 users' bodies are 20 MB).
	Shows presence.Mapped
	// Transport and Dest identify the server it was made at; a change of either in
	// Presence.ini makes the publication unusable.
	Transport string
	Dest      string
}

// hasState reports whether the publication knows the state it shows.
func (pub *Publication) hasState() bool { return pub.Shows != presence.Mapped{} }

// ETagStore persists publications by SIP URI (BoltPublications in the service).
// The publisher writes what changed once per Send batch and refresh round, in one
// SavePublications (on bbolt, 0.4 ms per single write here, so 6 s for a burst of
// 15,000, against 0.25 s in one); a nil value deletes.
type ETagStore interface {
	LoadPublications() (map[string]Publication, error)
	SavePublications(pubs map[string]*Publication) error
}

// Publisher is a delivery.Target speaking SIP.
type Publisher struct {
	o    Options
	conn *Conn
	sem  chan struct{} // transactions in flight, shared by Send and refreshes
	dest string        // conn.Dest
	from *sip.Uri
	log  *slog.Logger
	wake chan struct{} // a publication due before nextLook

	mu    sync.Mutex
	pubs  map[string]*Publication // by SIP URI as written in the users file
	dirty map[string]*Publication // not yet in the ETagStore; nil value: delete
	users map[string]*userLock    // one operation per user at a time
	stats counts
	// nextLook is when Run looks at the publications next (zero before it runs).
	nextLook time.Time

	flushMu sync.Mutex // one ETagStore write at a time, in order
}

type userLock struct {
	sync.Mutex
	refs int
}

// counts are what the publisher did, for tests.
type counts struct {
	initial, modified, refreshed, removed, restarted int
}

// New checks the options and starts a SIP user agent.
func New(o Options) (*Publisher, error) {
	if o.Server == "" && o.OutboundProxy == "" || o.Concurrency < 1 || o.Rate <= 0 || o.Timeout <= 0 || o.Expires <= 0 {
		return nil, errors.New("sip.New: incomplete Settings (start from DefaultSettings, or config's [SIP])")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{o: o, log: o.Logger, pubs: map[string]*Publication{}, dirty: map[string]*Publication{},
		users: map[string]*userLock{}, sem: make(chan struct{}, o.Concurrency), wake: make(chan struct{}, 1)}
	if o.From != "" {
		var u sip.Uri
		if err := sip.ParseUri(o.From, &u); err != nil || u.Host == "" {
			return nil, fmt.Errorf("[SIP] From %q is not a SIP URI; write it as sip:name@host", o.From)
		}
		p.from = &u
	}
	// Requests to us (a PBX's OPTIONS keepalive on our TCP connection) are not
	// served: a publisher has no dialogs.
	conn, err := NewConn(o.Settings, ConnOptions{Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	p.conn, p.dest = conn, conn.Dest
	if o.ETags != nil {
		stored, err := o.ETags.LoadPublications()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("read kept SIP publications: %w", err)
		}
		for uri, pub := range stored {
			if pub.Transport == o.Transport && pub.Dest == p.dest {
				p.pubs[uri] = &pub
			}
		}
	}
	return p, nil
}

// Accepts reports whether u has a SIP URI to publish to (delivery.Accepter), so the
// dispatcher does not queue SIP states for users the PBX knows by extension only.
func (p *Publisher) Accepts(u users.User) bool { return u.SIPURI != "" }

// Name is "sip".
func (p *Publisher) Name() string { return "sip" }

// Close stops the user agent (its connections and transactions).
func (p *Publisher) Close() error {
	return p.conn.Close()
}

// Published counts the live publications (those with an entity tag).
func (p *Publisher) Published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pub := range p.pubs {
		if pub.ETag != "" {
			n++
		}
	}
	return n
}

// Send publishes every item, Concurrency at a time, paced to Rate, and returns
// when all are settled.
func (p *Publisher) Send(ctx context.Context, items []delivery.Item) []error {
	return p.each(ctx, items, p.publish)
}

// Reassert makes sure the server still has each item's state, which it accepted
// before (delivery.Reasserter): a publication with that body is refreshed (SIP-If-Match,
// no body, so watchers get no NOTIFY), and published afresh only where the server
// refuses the entity tag (it restarted and lost it, or the publication lapsed);
// any other state is published. Concurrency at a time, paced to Rate.
func (p *Publisher) Reassert(ctx context.Context, items []delivery.Item) []error {
	return p.each(ctx, items, func(ctx context.Context, it delivery.Item) error {
		if _, err := target(it); err != nil || it.Remove() {
			return err
		}
		if pub := p.publication(it.User.SIPURI); pub != nil && pub.hasState() &&
			bytes.Equal(PIDF(it.User.SIPURI, pub.Shows), PIDF(it.User.SIPURI, it.Mapped)) {
			_, err := p.refresh(ctx, it.User.SIPURI, true)
			return err
		}
		return p.publish(ctx, it)
	})
}

// each runs f on every item, Concurrency at a time; when ctx ends nothing new
// starts and what is under way finishes. It returns when all are settled.
func (p *Publisher) each(ctx context.Context, items []delivery.Item, f func(context.Context, delivery.Item) error) []error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			for j := i; j < len(items); j++ {
				errs[j] = ctx.Err()
			}
			wg.Wait()
			p.flush()
			return errs
		}
		wg.Add(1)
		go func() {
			defer func() { <-p.sem; wg.Done() }()
			errs[i] = f(ctx, it)
		}()
	}
	wg.Wait()
	p.flush()
	return errs
}

// lock serialises the operations on one user (a Send and a refresh may meet).
func (p *Publisher) lock(uri string) func() {
	p.mu.Lock()
	l := p.users[uri]
	if l == nil {
		l = &userLock{}
		p.users[uri] = l
	}
	l.refs++
	p.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		p.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(p.users, uri)
		}
		p.mu.Unlock()
	}
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

// keep records uri's publication (nil: none), in the ETagStore at the next
// flush; and wakes Run if it falls due before
// Run planned to look. Callers hold uri's lock, so writes for one user keep
// their order.
func (p *Publisher) keep(uri string, pub *Publication) {
	p.mu.Lock()
	if pub == nil {
		delete(p.pubs, uri)
	} else {
		p.pubs[uri] = pub
	}
	if p.o.ETags != nil {
		p.dirty[uri] = pub
	}
	early := pub != nil && p.dueAt(pub).Before(p.nextLook)
	p.mu.Unlock()
	if early {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// flush writes the publications changed since the last flush to the ETagStore in
// one go.
func (p *Publisher) flush() {
	if p.o.ETags == nil {
		return
	}
	p.flushMu.Lock()
	defer p.flushMu.Unlock()
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[string]*Publication{}
	p.mu.Unlock()
	if len(dirty) == 0 {
		return
	}
	if err := p.o.ETags.SavePublications(dirty); err != nil {
		p.log.Warn("Keeping SIP publications in the state file failed", "publications", len(dirty), "err", err)
	}
}

func (p *Publisher) count(f func(*counts)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// target parses the item's SIP URI.
func target(it delivery.Item) (sip.Uri, error) {
	uri := it.User.SIPURI
	if uri == "" {
		return sip.Uri{}, delivery.Permanent("%s has no SIP URI: add a SIP URI column in the users file (e.g. sip:1001@pbx.example)", it.User.UPN)
	}
	var t sip.Uri
	if err := sip.ParseUri(uri, &t); err != nil || t.Host == "" || (t.Scheme != "sip" && t.Scheme != "sips") {
		return sip.Uri{}, delivery.Permanent("%s: SIP URI %q in the users file is not valid; write it as sip:user@host", it.User.UPN, uri)
	}
	return t, nil
}

func (p *Publisher) publish(ctx context.Context, it delivery.Item) error {
	t, err := target(it)
	if err != nil {
		return err
	}
	uri := it.User.SIPURI
	defer p.lock(uri)()
	if it.Remove() {
		return p.remove(ctx, uri, t)
	}
	body := PIDF(uri, it.Mapped)
	if pub := p.publication(uri); pub != nil && pub.ETag != "" && p.o.Clock.Now().Before(pub.Expires) {
		res, err := p.transact(ctx, publishReq{uri: uri, target: t, ifMatch: pub.ETag, body: body, expires: p.o.Expires})
		if err != nil {
			return err
		}
		if res.IsSuccess() {
			p.keep(uri, p.published(res, it.Mapped, pub.ETag))
			p.count(func(c *counts) { c.modified++ })
			return nil
		}
		if isAuthFailure(res) {
			return p.refused(uri, res)
		}
		// 412 Conditional Request Failed (RFC 3903 section 6), or another refusal
		// of the entity tag (Kamailio 5.6 answers 500): start over.
		p.log.Debug("Conditional PUBLISH refused; publishing afresh", "uri", uri, "status", res.StatusCode)
		p.keep(uri, nil)
		p.count(func(c *counts) { c.restarted++ })
	}
	res, err := p.transact(ctx, publishReq{uri: uri, target: t, body: body, expires: p.o.Expires})
	if err != nil {
		return err
	}
	if !res.IsSuccess() {
		if p.publication(uri) != nil {
			p.keep(uri, nil) // lapsed or unusable: a later state starts afresh anyway
		}
		return p.refused(uri, res)
	}
	p.keep(uri, p.published(res, it.Mapped, ""))
	p.count(func(c *counts) { c.initial++ })
	return nil
}

// remove withdraws uri's publication with Expires: 0 (RFC 3903 section 4.5).
// Without a live publication there is nothing to withdraw.
func (p *Publisher) remove(ctx context.Context, uri string, t sip.Uri) error {
	pub := p.publication(uri)
	if pub == nil {
		return nil
	}
	if pub.ETag == "" || !p.o.Clock.Now().Before(pub.Expires) {
		p.keep(uri, nil)
		return nil
	}
	res, err := p.transact(ctx, publishReq{uri: uri, target: t, ifMatch: pub.ETag})
	if err != nil {
		return err // kept: the retry removes it
	}
	if isAuthFailure(res) {
		return p.refused(uri, res)
	}
	p.keep(uri, nil)
	if !res.IsSuccess() {
		// 412 (or Kamailio's 500): the server no longer has it; anything else:
		// it lapses by itself at its expiry. Either way nothing is left to do.
		p.log.Debug("Removal refused; the publication is gone or lapses by itself", "uri", uri,
			"status", res.StatusCode, "expires", pub.Expires)
	}
	p.count(func(c *counts) { c.removed++ })
	return nil
}

// published builds the publication a 2xx created, modified or refreshed. The
// 2xx carries the new entity tag and the granted lifetime (RFC 3903 section 6,
// step 8); without them ours stand.
func (p *Publisher) published(res *sip.Response, shows presence.Mapped, etag string) *Publication {
	life := p.o.Expires
	if s, ok := deltaSeconds(res.GetHeader("Expires")); ok && s > 0 {
		life = time.Duration(s) * time.Second
	}
	if h := res.GetHeader("SIP-ETag"); h != nil && strings.TrimSpace(h.Value()) != "" {
		etag = strings.TrimSpace(h.Value())
	}
	if etag == "" {
		p.log.Warn("The SIP server accepted a PUBLISH without giving a SIP-ETag; the next state is published afresh", "server", p.dest)
	}
	return &Publication{ETag: etag, Expires: p.o.Clock.Now().Add(life), Lifetime: life, Shows: shows,
		Transport: p.o.Transport, Dest: p.dest}
}
