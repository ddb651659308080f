// Package sip publishes presence to a SIP presence server (the PBX) with PUBLISH
// (RFC 3903): Event: presence with a PIDF body (RFC 3863 with RPID, RFC 4480),
// Event: dialog with a dialog-info body (RFC 4235, what BLF keys subscribe to),
// or both, as [SIP] Event says. Each user has a publication per event package.
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
	"slices"
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

// Event packages a publication is made with ([SIP] Event).
const (
	// EventPresence publishes PIDF (RFC 3863): what SIP presence servers,
	// attendant consoles and presence-aware clients read.
	EventPresence = "presence"
	// EventDialog publishes dialog-info (RFC 4235): what the BLF keys of desk
	// phones subscribe to.
	EventDialog = "dialog"
	// EventBoth makes two publications per user, one of each.
	EventBoth = "both"
)

// Settings are the [SIP] settings of Presence.ini, the publisher's own: config
// decodes the section into them, starting from DefaultSettings, and checks them
// (with the file, line and key in its messages); New takes them as they are.
type Settings struct {
	Transport string // udp, tcp or tls
	// Server is the host:port of the presence server; requests go there unless
	// OutboundProxy is set. Empty: no SIP target.
	Server string
	// Event is the event package published: EventPresence, EventDialog or
	// EventBoth.
	Event string
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
	return Settings{Transport: "udp", Event: EventPresence, Expires: time.Hour, Concurrency: 32, Rate: 2000, Timeout: 5 * time.Second}
}

// Events are the event packages s publishes, in the order each user's are
// published; none for an Event that is not one of the three.
func (s Settings) Events() []string {
	switch s.Event {
	case EventPresence:
		return []string{EventPresence}
	case EventDialog:
		return []string{EventDialog}
	case EventBoth:
		return []string{EventPresence, EventDialog}
	}
	return nil
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
	return slog.GroupValue(slog.String("transport", s.Transport), slog.String("server", s.Server), slog.String("event", s.Event),
		slog.String("outboundProxy", s.OutboundProxy), slog.String("from", s.From),
		slog.String("username", s.Username), slog.Bool("password", s.Password != ""))
}

// Key names one publication: the user's SIP URI as written in the users file,
// and the event package (EventPresence or EventDialog).
type Key struct {
	URI   string
	Event string
}

// Publication is what the server holds for one user and event package.
type Publication struct {
	ETag    string    // empty: the state must be published afresh
	Expires time.Time //
	// Lifetime is what the server granted (its Expires), for refreshing at 80%.
	Lifetime time.Duration
	// Shows is the state published; its body is PIDF(uri, Shows) or
	// DialogInfo(uri, Version, Shows), made again when it is needed rather than
	// kept (50,000 users' bodies are 20 MB).
	Shows presence.Mapped
	// Version is the version attribute of the last dialog-info document sent
	// (Event: dialog; RFC 4235 section 4.1: versions start at 0 and grow by one
	// for each document): the next carries Version+1, across modifications, a
	// fresh start after the server refused the entity tag, and restarts. 0 for
	// Event: presence.
	Version uint64
	// Transport and Dest identify the server it was made at; a change of either in
	// Presence.ini makes the publication unusable.
	Transport string
	Dest      string
}

// hasState reports whether the publication knows the state it shows.
func (pub *Publication) hasState() bool { return pub.Shows != presence.Mapped{} }

// ETagStore persists publications by Key (BoltPublications in the service).
// The publisher writes what changed once per Send batch and refresh round, in one
// SavePublications (on bbolt, 0.4 ms per single write here, so 6 s for a burst of
// 15,000, against 0.25 s in one); a nil value deletes.
type ETagStore interface {
	LoadPublications() (map[Key]Publication, error)
	SavePublications(pubs map[Key]*Publication) error
}

// Publisher is a delivery.Target speaking SIP.
type Publisher struct {
	o      Options
	events []string // Settings.Events()
	conn   *Conn
	sem    chan struct{} // transactions in flight, shared by Send and refreshes
	dest   string        // conn.Dest
	from   *sip.Uri
	log    *slog.Logger
	wake   chan struct{} // a publication due before nextLook

	mu    sync.Mutex
	pubs  map[Key]*Publication // by SIP URI as written in the users file, and event
	dirty map[Key]*Publication // not yet in the ETagStore; nil value: delete
	users map[Key]*userLock    // one operation per publication at a time
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
	if o.Server == "" && o.OutboundProxy == "" || len(o.Events()) == 0 || o.Concurrency < 1 || o.Rate <= 0 || o.Timeout <= 0 || o.Expires <= 0 {
		return nil, errors.New("sip.New: incomplete Settings (start from DefaultSettings, or config's [SIP])")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{o: o, events: o.Events(), log: o.Logger, pubs: map[Key]*Publication{}, dirty: map[Key]*Publication{},
		users: map[Key]*userLock{}, sem: make(chan struct{}, o.Concurrency), wake: make(chan struct{}, 1)}
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
		retired := 0
		for k, pub := range stored {
			if pub.Transport == o.Transport && pub.Dest == p.dest {
				p.pubs[k] = &pub
				if !p.publishes(k.Event) {
					retired++
				}
			}
		}
		if retired > 0 {
			p.log.Info("Publications of an event package [SIP] Event no longer names are withdrawn", "publications", retired, "event", o.Event)
		}
	}
	return p, nil
}

// publishes reports whether [SIP] Event names event. A kept publication of
// another (Event was changed) is withdrawn by Run, so that a BLF key does not
// stay lit, or a note shown, until it lapses.
func (p *Publisher) publishes(event string) bool { return slices.Contains(p.events, event) }

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
// before (delivery.Reasserter): a publication showing that state is refreshed
// (SIP-If-Match, no body, so watchers get no NOTIFY), and published afresh only
// where the server refuses the entity tag (it restarted and lost it, or the
// publication lapsed); any other state is published. Each event package's
// publication on its own; Concurrency items at a time, paced to Rate.
func (p *Publisher) Reassert(ctx context.Context, items []delivery.Item) []error {
	return p.each(ctx, items, func(ctx context.Context, it delivery.Item) error {
		t, err := target(it)
		if err != nil || it.Remove() {
			return err
		}
		return p.eachEvent(it, func(k Key) error {
			if pub := p.publication(k); pub != nil && pub.hasState() && sameShown(k, pub.Shows, it.Mapped) {
				_, err := p.refresh(ctx, k, true)
				return err
			}
			return p.publishOne(ctx, k, t, it)
		})
	})
}

// sameShown reports whether a and b give the same document for k (the
// dialog-info's version aside).
func sameShown(k Key, a, b presence.Mapped) bool {
	if k.Event == EventDialog {
		return a.DialogState() == b.DialogState()
	}
	return bytes.Equal(PIDF(k.URI, a), PIDF(k.URI, b))
}

// eachEvent runs f for the item's publication of each event package [SIP]
// Event names, one after the other (so Concurrency still bounds the
// transactions in flight), and returns the error the dispatcher must act on:
// see worse. A server that is down ends it: the next would only wait for its
// timeout too.
func (p *Publisher) eachEvent(it delivery.Item, f func(k Key) error) error {
	var err error
	for _, ev := range p.events {
		err = worse(err, f(Key{URI: it.User.SIPURI, Event: ev}))
		if errors.Is(err, delivery.ErrTargetDown) {
			break
		}
	}
	return err
}

// worse combines the errors of one item's publications (Event = both): the
// one the dispatcher must act on comes first (the server is down, then a
// failure worth retrying, then a refusal for good, which drops the item only
// when every publication was refused for good), and the other's words follow.
func worse(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	if severity(b) > severity(a) {
		a, b = b, a
	}
	return fmt.Errorf("%w; and %s", a, b.Error())
}

func severity(err error) int {
	var perm *delivery.PermanentError
	switch {
	case errors.Is(err, delivery.ErrTargetDown):
		return 2
	case errors.As(err, &perm):
		return 0
	}
	return 1
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

// lock serialises the operations on one publication (a Send and a refresh may meet).
func (p *Publisher) lock(k Key) func() {
	p.mu.Lock()
	l := p.users[k]
	if l == nil {
		l = &userLock{}
		p.users[k] = l
	}
	l.refs++
	p.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		p.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(p.users, k)
		}
		p.mu.Unlock()
	}
}

func (p *Publisher) publication(k Key) *Publication {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pub := p.pubs[k]; pub != nil {
		c := *pub
		return &c
	}
	return nil
}

// keep records k's publication (nil: none), in the ETagStore at the next
// flush; and wakes Run if it falls due before
// Run planned to look. Callers hold k's lock, so writes for one publication
// keep their order.
func (p *Publisher) keep(k Key, pub *Publication) {
	p.mu.Lock()
	if pub == nil {
		delete(p.pubs, k)
	} else {
		p.pubs[k] = pub
	}
	if p.o.ETags != nil {
		p.dirty[k] = pub
	}
	early := pub != nil && p.dueAt(k, pub).Before(p.nextLook)
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
	p.dirty = map[Key]*Publication{}
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
	return p.eachEvent(it, func(k Key) error { return p.publishOne(ctx, k, t, it) })
}

// body is the document showing m in k's publication: PIDF, or dialog-info
// with the given version.
func body(k Key, m presence.Mapped, version uint64) []byte {
	if k.Event == EventDialog {
		return DialogInfo(k.URI, version, m)
	}
	return PIDF(k.URI, m)
}

// nextVersion is the version of the next dialog-info document of k's
// publication pub (nil: a new publication, whose first document is version
// 0); always 0 for Event: presence.
func nextVersion(k Key, pub *Publication) uint64 {
	if pub == nil || k.Event != EventDialog {
		return 0
	}
	return pub.Version + 1
}

// spend records that the dialog-info document of k with version may have
// reached the server (no answer came), so that the next one, whatever state
// it shows, carries a higher version. Only a kept publication can keep it.
func (p *Publisher) spend(k Key, version uint64) {
	if k.Event != EventDialog {
		return
	}
	if pub := p.publication(k); pub != nil && pub.Version < version {
		pub.Version = version
		p.keep(k, pub)
	}
}

// lights reports whether m's dialog-info document holds a dialog (confirmed
// or early), which lights a BLF key or makes it blink.
func lights(m presence.Mapped) bool {
	s := m.DialogState()
	return s == "confirmed" || s == "early"
}

// publishOne sends the item's state (or its removal) to k's publication: a
// modification of the live one, else a new one.
func (p *Publisher) publishOne(ctx context.Context, k Key, t sip.Uri, it delivery.Item) error {
	defer p.lock(k)()
	if it.Remove() {
		return p.remove(ctx, k, t)
	}
	pub := p.publication(k)
	version := nextVersion(k, pub)
	if pub != nil && pub.ETag != "" && p.o.Clock.Now().Before(pub.Expires) {
		res, err := p.transact(ctx, publishReq{key: k, target: t, ifMatch: pub.ETag, body: body(k, it.Mapped, version), expires: p.o.Expires})
		if err != nil {
			p.spend(k, version)
			return err
		}
		if res.IsSuccess() {
			p.keep(k, p.published(res, it.Mapped, pub.ETag, version))
			p.count(func(c *counts) { c.modified++ })
			return nil
		}
		if isAuthFailure(res) {
			return p.refused(k, res)
		}
		// 412 Conditional Request Failed (RFC 3903 section 6), or another refusal
		// of the entity tag (Kamailio 5.6 answers 500): start over.
		p.log.Debug("Conditional PUBLISH refused; publishing afresh", "uri", k.URI, "event", k.Event, "status", res.StatusCode)
		p.keep(k, nil)
		p.count(func(c *counts) { c.restarted++ })
		// The refused document was not applied: the fresh one takes its version.
	}
	res, err := p.transact(ctx, publishReq{key: k, target: t, body: body(k, it.Mapped, version), expires: p.o.Expires})
	if err != nil {
		p.spend(k, version)
		return err
	}
	if !res.IsSuccess() {
		if p.publication(k) != nil {
			p.keep(k, nil) // lapsed or unusable: a later state starts afresh anyway
		}
		return p.refused(k, res)
	}
	p.keep(k, p.published(res, it.Mapped, "", version))
	p.count(func(c *counts) { c.initial++ })
	return nil
}

// remove withdraws k's publication with Expires: 0 (RFC 3903 section 4.5).
// Without a live publication there is nothing to withdraw. A dialog
// publication that lights a key is first modified to show it idle: Kamailio
// 5.6 notifies the watchers of a removed dialog publication with the document
// it held, so the key would stay lit until the phone subscribed again.
func (p *Publisher) remove(ctx context.Context, k Key, t sip.Uri) error {
	pub := p.publication(k)
	if pub == nil {
		return nil
	}
	if pub.ETag == "" || !p.o.Clock.Now().Before(pub.Expires) {
		p.keep(k, nil)
		return nil
	}
	if k.Event == EventDialog && lights(pub.Shows) {
		version := nextVersion(k, pub)
		res, err := p.transact(ctx, publishReq{key: k, target: t, ifMatch: pub.ETag, body: DialogInfo(k.URI, version, presence.Mapped{}), expires: p.o.Expires})
		if err != nil {
			p.spend(k, version)
			return err // kept: the retry removes it
		}
		if isAuthFailure(res) {
			return p.refused(k, res)
		}
		if !res.IsSuccess() {
			// The server no longer has it (or refuses it): nothing left to withdraw.
			p.log.Debug("Removal refused; the publication is gone or lapses by itself", "uri", k.URI, "event", k.Event,
				"status", res.StatusCode, "expires", pub.Expires)
			p.keep(k, nil)
			p.count(func(c *counts) { c.removed++ })
			return nil
		}
		pub = p.published(res, presence.Mapped{}, pub.ETag, version) // shows nothing: never published again
		p.keep(k, pub)
	}
	res, err := p.transact(ctx, publishReq{key: k, target: t, ifMatch: pub.ETag})
	if err != nil {
		return err // kept: the retry removes it
	}
	if isAuthFailure(res) {
		return p.refused(k, res)
	}
	p.keep(k, nil)
	if !res.IsSuccess() {
		// 412 (or Kamailio's 500): the server no longer has it; anything else:
		// it lapses by itself at its expiry. Either way nothing is left to do.
		p.log.Debug("Removal refused; the publication is gone or lapses by itself", "uri", k.URI, "event", k.Event,
			"status", res.StatusCode, "expires", pub.Expires)
	}
	p.count(func(c *counts) { c.removed++ })
	return nil
}

// published builds the publication a 2xx created, modified or refreshed. The
// 2xx carries the new entity tag and the granted lifetime (RFC 3903 section 6,
// step 8); without them ours stand.
func (p *Publisher) published(res *sip.Response, shows presence.Mapped, etag string, version uint64) *Publication {
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
	return &Publication{ETag: etag, Expires: p.o.Clock.Now().Add(life), Lifetime: life, Shows: shows, Version: version,
		Transport: p.o.Transport, Dest: p.dest}
}
