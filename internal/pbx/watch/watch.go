package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/backoff"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Options configure a Watcher.
type Options struct {
	Settings
	// SIP is the connection: [SIP]'s server, transport, outbound proxy, TLS,
	// digest credentials and Timeout.
	SIP pbxsip.Settings
	// Changes is handed each batch of users whose PBX state changed, one batch
	// at a time, newest state per user.
	Changes func(ctx context.Context, changes []presence.PBXChange)
	Clock   clock.Clock
	Logger  *slog.Logger
}

// Subscription phases.
const (
	phaseNew     = "new"     // not subscribed yet, or to be subscribed again
	phaseActive  = "active"  // the PBX accepted it
	phaseRefused = "refused" // the PBX refuses this user (403, 404, ...); tried again after Expires
	phaseFailed  = "failed"  // no answer or an error; tried again after a backoff
)

// retry is the schedule for subscriptions that failed (no answer, 5xx, 481).
var retry = backoff.Policy{Min: 2 * time.Second, Max: 5 * time.Minute}

// probeEvery is how often one active subscription is refreshed early to find a
// PBX that restarted and forgot its subscriptions (481).
const probeEvery = 30 * time.Second

// Watcher keeps a subscription per user and event package at the PBX.
type Watcher struct {
	o    Options
	conn *pbxsip.Conn
	log  *slog.Logger
	wake chan struct{}
	sem  chan struct{} // transactions in flight

	mu       sync.Mutex
	users    map[string]*watched      // by UPN
	byCallID map[string]*subscription // live dialogs
	pending  map[string]presence.PBXChange
	emit     chan struct{}
	probeAt  int // round robin over active subscriptions
	// unreachable: the last probe got no answer.
	unreachable bool
	probing     atomic.Bool // a probe is under way
	counts      Counts
}

// Counts are totals since start, for metrics and tests.
type Counts struct {
	Subscribes, Refreshes, Notifies, Ignored, Unknown, Reestablished int
}

type watched struct {
	user  users.User
	uri   sip.Uri
	subs  []*subscription
	state presence.PBXState
}

type subscription struct {
	w       *watched
	event   string
	phase   string
	callID  string
	fromTag string
	toTag   string
	cseq    uint32
	remote  *sip.Uri // the PBX's Contact: the target of in-dialog requests
	expires time.Time
	due     time.Time
	busy    bool // a transaction is under way
	back    backoff.Backoff
	lastErr string
	told    bool // a refusal was logged
	garbled bool // a garbled body was logged

	dialogs DialogTracker
	line    presence.PBXState // what this subscription says
}

// New checks the options and starts listening for NOTIFYs.
func New(o Options) (*Watcher, error) {
	if len(o.Events()) == 0 || o.Expires <= 0 || o.Rate <= 0 || o.Changes == nil {
		return nil, errors.New("watch.New: incomplete Settings (start from DefaultSettings, or config's [PBX])")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{o: o, log: o.Logger, wake: make(chan struct{}, 1), emit: make(chan struct{}, 1),
		sem: make(chan struct{}, 16), users: map[string]*watched{}, byCallID: map[string]*subscription{},
		pending: map[string]presence.PBXChange{}}
	listen := o.Listen
	if listen == "" {
		listen = ":0"
	}
	conn, err := pbxsip.NewConn(o.SIP, pbxsip.ConnOptions{Listen: listen, OnRequest: w.serve, Rate: o.Rate, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	w.conn = conn
	return w, nil
}

// Contact is the address NOTIFYs come to.
func (w *Watcher) Contact() string { return w.conn.Contact.String() }

// Close ends every subscription (Expires: 0, best effort, a second at most) and
// stops listening.
func (w *Watcher) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	w.mu.Lock()
	var live []*subscription
	for _, wu := range w.users {
		live = append(live, w.dropLocked(wu)...)
	}
	w.mu.Unlock()
	w.end(ctx, live)
	return w.conn.Close()
}

// end sends Expires: 0 in each of subs' dialogs (at Rate), best effort, and
// returns when all are answered or ctx ends.
func (w *Watcher) end(ctx context.Context, subs []*subscription) {
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = w.transact(ctx, s, 0)
		}()
	}
	wg.Wait()
}

// SetUsers sets whom to watch: users with a SIP URI; new ones are subscribed
// (at Rate), departed ones unsubscribed.
func (w *Watcher) SetUsers(list []users.User) {
	w.mu.Lock()
	now := w.o.Clock.Now()
	keep := map[string]bool{}
	for _, u := range list {
		if u.SIPURI == "" {
			continue
		}
		target, err := w.o.Target(u)
		var uri sip.Uri
		if err == nil {
			err = sip.ParseUri(target, &uri)
		}
		if err != nil {
			w.log.Warn("Not watching a user", "upn", u.UPN, "sipUri", u.SIPURI, "err", err.Error())
			continue
		}
		keep[u.UPN] = true
		if old, ok := w.users[u.UPN]; ok && old.uri.String() == uri.String() {
			old.user = u
			continue
		} else if ok {
			w.dropLocked(old)
		}
		wu := &watched{user: u, uri: uri, state: presence.PBXState{UPN: u.UPN}}
		for _, ev := range w.o.Events() {
			wu.subs = append(wu.subs, &subscription{w: wu, event: ev, phase: phaseNew, due: now, back: backoff.Backoff{Policy: retry}})
		}
		w.users[u.UPN] = wu
	}
	var gone []*subscription
	for upn, wu := range w.users {
		if !keep[upn] {
			gone = append(gone, w.dropLocked(wu)...)
		}
	}
	w.mu.Unlock()
	w.poke()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), w.o.SIP.Timeout)
		defer cancel()
		w.end(ctx, gone)
	}()
}

// dropLocked forgets wu and returns its live subscriptions, to be ended.
func (w *Watcher) dropLocked(wu *watched) []*subscription {
	delete(w.users, wu.user.UPN)
	delete(w.pending, wu.user.UPN)
	var live []*subscription
	for _, s := range wu.subs {
		delete(w.byCallID, s.callID)
		if s.phase == phaseActive && !s.busy {
			s.busy = true
			live = append(live, s)
		}
		s.phase = phaseRefused // never scheduled again
		s.due = time.Time{}
	}
	return live
}

func (w *Watcher) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run subscribes, refreshes and re-establishes until ctx ends, and hands the
// changes to Options.Changes.
func (w *Watcher) Run(ctx context.Context) error {
	go w.emitter(ctx)
	probe := w.o.Clock.NewTicker(probeEvery)
	defer probe.Stop()
	for {
		next := w.schedule(ctx)
		wait := next.Sub(w.o.Clock.Now())
		if next.IsZero() || wait > time.Second {
			wait = time.Second
		}
		t := w.o.Clock.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-w.wake:
		case <-t.C():
		case <-probe.C():
			if w.probing.CompareAndSwap(false, true) {
				go func() { defer w.probing.Store(false); w.probe(ctx) }() // up to [SIP] Timeout: not in the way of the schedule
			}
		}
		t.Stop()
	}
}

// schedule starts a transaction for every subscription due, as many as may
// be in flight, and returns when the next one falls due (zero: none).
func (w *Watcher) schedule(ctx context.Context) time.Time {
	now := w.o.Clock.Now()
	var due []*subscription
	var next time.Time
	w.mu.Lock()
	for _, wu := range w.users {
		for _, s := range wu.subs {
			switch {
			case s.busy || s.due.IsZero():
			case !s.due.After(now):
				due = append(due, s)
			case next.IsZero() || s.due.Before(next):
				next = s.due
			}
			// A subscription that ran out without a refresh says nothing any more.
			if s.phase == phaseActive && !s.busy && !s.expires.IsZero() && now.After(s.expires) {
				w.lapseLocked(s, now)
			}
		}
	}
	// Earliest first, so a re-establishment storm keeps its order.
	slices.SortFunc(due, func(a, b *subscription) int { return a.due.Compare(b.due) })
	for _, s := range due {
		if len(w.sem) == cap(w.sem) {
			break
		}
		s.busy = true
		w.sem <- struct{}{}
		go func() {
			defer func() { <-w.sem; w.poke() }()
			w.step(ctx, s)
		}()
	}
	w.mu.Unlock()
	return next
}

// step subscribes s afresh or refreshes it.
func (w *Watcher) step(ctx context.Context, s *subscription) {
	res, err := w.transact(ctx, s, w.o.Expires)
	w.mu.Lock()
	defer w.mu.Unlock()
	s.busy = false
	if s.phase == phaseRefused && s.due.IsZero() {
		return // dropped meanwhile
	}
	now := w.o.Clock.Now()
	w.settleLocked(s, res, err, now)
}

// settleLocked acts on the answer to a SUBSCRIBE.
func (w *Watcher) settleLocked(s *subscription, res *sip.Response, err error, now time.Time) {
	name := s.w.user.UPN
	switch {
	case err != nil:
		s.lastErr = err.Error()
		w.failLocked(s, now)
		w.log.Debug("SUBSCRIBE got no answer", "upn", name, "event", s.event, "err", s.lastErr)
	case res.IsSuccess():
		granted := grantedExpires(res, w.o.Expires)
		if s.toTag == "" {
			if to := res.To(); to != nil {
				s.toTag, _ = to.Params.Get("tag")
			}
		}
		if c := res.Contact(); c != nil && s.remote == nil {
			u := c.Address
			s.remote = &u
		}
		if s.phase != phaseActive {
			s.phase = phaseActive
			w.counts.Subscribes++
		} else {
			w.counts.Refreshes++
		}
		s.lastErr = ""
		s.back.Reset()
		s.told = false
		s.expires = now.Add(granted)
		s.due = now.Add(granted * 4 / 5)
		if granted == 0 {
			s.due = now // the PBX ended it at once: subscribe again
		}
	case res.StatusCode == sip.StatusCallTransactionDoesNotExists:
		// The PBX forgot the subscription (it restarted): a new one.
		s.lastErr = fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
		w.restartLocked(s, now)
	case res.StatusCode == sip.StatusForbidden || res.StatusCode == sip.StatusNotFound ||
		res.StatusCode == 489 || res.StatusCode == sip.StatusMethodNotAllowed || res.StatusCode == sip.StatusNotImplemented ||
		res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired:
		s.lastErr = refusal(res, s, w.o.SIP.Username)
		w.endDialogLocked(s)
		s.phase = phaseRefused
		s.due = now.Add(w.o.Expires)
		if !s.told {
			s.told = true
			w.log.Warn("The PBX refuses to let presencebridge watch this user; the others carry on",
				"upn", name, "watched", s.w.uri.String(), "event", s.event, "err", s.lastErr)
		}
		w.setLineLocked(s, presence.PBXState{}, now)
	default:
		s.lastErr = fmt.Sprintf("SUBSCRIBE %s: %d %s", s.w.uri.String(), res.StatusCode, res.Reason)
		w.failLocked(s, now)
	}
}

// refusal explains a final answer refusing the subscription, with the fix.
func refusal(res *sip.Response, s *subscription, user string) string {
	what := fmt.Sprintf("SUBSCRIBE %s (Event: %s): %d %s", s.w.uri.String(), s.event, res.StatusCode, res.Reason)
	switch res.StatusCode {
	case sip.StatusNotFound:
		return what + ": the PBX has no such user; check the SIP URI in the users file (Asterisk: the extension needs a hint)"
	case sip.StatusForbidden:
		return what + ": the PBX does not let presencebridge watch this user; allow subscriptions from [SIP] Username or From"
	case 489:
		return what + ": the PBX does not serve this event; set [PBX] Watch to the event it serves (dialog for most PBXs)"
	case sip.StatusUnauthorized, sip.StatusProxyAuthRequired:
		if user == "" {
			return what + ": the PBX asks for credentials; set [SIP] Username and Password"
		}
		return what + fmt.Sprintf(" after sending credentials for user %q; check [SIP] Username and Password", user)
	}
	return what + ": the PBX does not take subscriptions; point [SIP] Server at the PBX's SIP address"
}

// failLocked schedules s again after its backoff; an active subscription keeps
// its dialog until it runs out (a refresh that failed may still work next time).
func (w *Watcher) failLocked(s *subscription, now time.Time) {
	if s.phase != phaseActive {
		s.phase = phaseFailed
	}
	s.due = now.Add(s.back.Next())
}

// restartLocked drops s's dialog and subscribes again now.
func (w *Watcher) restartLocked(s *subscription, now time.Time) {
	w.endDialogLocked(s)
	s.phase = phaseNew
	s.due = now
	w.counts.Reestablished++
}

// lapseLocked: s ran out without a refresh; what it said is unknown now.
func (w *Watcher) lapseLocked(s *subscription, now time.Time) {
	w.endDialogLocked(s)
	s.phase = phaseFailed
	if s.due.IsZero() || s.due.After(now) {
		s.due = now
	}
	w.setLineLocked(s, presence.PBXState{}, now)
}

func (w *Watcher) endDialogLocked(s *subscription) {
	delete(w.byCallID, s.callID)
	s.callID, s.toTag, s.remote, s.expires = "", "", nil, time.Time{}
	s.dialogs.Reset()
}

// transact sends s's SUBSCRIBE (a new dialog when s has none, else in the
// dialog) asking for expires (0 ends it).
func (w *Watcher) transact(ctx context.Context, s *subscription, expires time.Duration) (*sip.Response, error) {
	w.mu.Lock()
	if s.callID == "" {
		s.callID = sip.GenerateTagN(20) + "@presencebridge"
		s.fromTag = sip.GenerateTagN(16)
		s.cseq = 0
		w.byCallID[s.callID] = s
	}
	s.cseq++
	target := s.w.uri
	if s.remote != nil {
		target = *s.remote
	}
	req := w.conn.Request(sip.SUBSCRIBE, target)
	from := &sip.FromHeader{Address: w.fromURI(s), Params: sip.NewParams()}
	from.Params.Add("tag", s.fromTag)
	req.AppendHeader(from)
	to := &sip.ToHeader{Address: s.w.uri, Params: sip.NewParams()}
	if s.toTag != "" {
		to.Params.Add("tag", s.toTag)
	}
	req.AppendHeader(to)
	callID := sip.CallIDHeader(s.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: s.cseq, MethodName: sip.SUBSCRIBE})
	req.AppendHeader(&sip.ContactHeader{Address: w.conn.Contact})
	req.AppendHeader(sip.NewHeader("Event", s.event))
	req.AppendHeader(sip.NewHeader("Accept", accept[s.event]))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires/time.Second))))
	w.mu.Unlock()
	res, err := w.conn.Transact(ctx, req, expires > 0)
	w.mu.Lock()
	if c := req.CSeq(); c != nil && c.SeqNo > s.cseq {
		s.cseq = c.SeqNo // digest answers took CSeqs
	}
	w.mu.Unlock()
	return res, err
}

var accept = map[string]string{"dialog": "application/dialog-info+xml", "presence": "application/pidf+xml"}

// fromURI is [SIP] From, else sip:presencebridge@ the user's domain.
func (w *Watcher) fromURI(s *subscription) sip.Uri {
	if w.o.SIP.From != "" {
		var u sip.Uri
		if sip.ParseUri(w.o.SIP.From, &u) == nil {
			return u
		}
	}
	return sip.Uri{Scheme: "sip", User: "presencebridge", Host: s.w.uri.Host}
}

// grantedExpires is the lifetime in a 2xx's Expires, else asked.
func grantedExpires(res *sip.Response, asked time.Duration) time.Duration {
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	return asked
}

// probe refreshes one active subscription early: a PBX that answers 481
// restarted and forgot them all, so every active one is refreshed now (each
// 481 then starts a new one).
func (w *Watcher) probe(ctx context.Context) {
	w.mu.Lock()
	var active []*subscription
	for _, wu := range w.users {
		for _, s := range wu.subs {
			if s.phase == phaseActive && !s.busy {
				active = append(active, s)
			}
		}
	}
	if len(active) == 0 {
		w.mu.Unlock()
		return
	}
	slices.SortFunc(active, func(a, b *subscription) int { return strings.Compare(a.callID, b.callID) })
	w.probeAt = (w.probeAt + 1) % len(active)
	s := active[w.probeAt]
	s.busy = true
	w.mu.Unlock()
	res, err := w.transact(ctx, s, w.o.Expires)
	w.mu.Lock()
	defer w.mu.Unlock()
	s.busy = false
	now := w.o.Clock.Now()
	forgot := err == nil && res.StatusCode == sip.StatusCallTransactionDoesNotExists
	back := err == nil && w.unreachable // the PBX answers again after a network break
	w.unreachable = err != nil
	w.settleLocked(s, res, err, now)
	switch {
	case err != nil:
		w.log.Warn("The PBX does not answer; the users' PBX states are kept until their subscriptions run out", "err", err.Error())
	case forgot:
		w.log.Info("The PBX forgot its subscriptions (it restarted?); subscribing again", "subscriptions", len(active))
	case back:
		// NOTIFYs sent during the break are lost: a refresh of each brings
		// its current state (RFC 6665 section 4.2.2), a 481 a new subscription.
		w.log.Info("The PBX answers again; refreshing every subscription for the states missed", "subscriptions", len(active))
	default:
		return
	}
	if err == nil {
		for _, o := range active {
			if o != s && o.phase == phaseActive {
				o.due = now
			}
		}
		w.poke()
	}
}

// serve answers requests from the PBX: NOTIFYs of our subscriptions, OPTIONS
// keepalives.
func (w *Watcher) serve(req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.NOTIFY:
		code, reason := w.notify(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
	case sip.OPTIONS:
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	case sip.ACK:
	default:
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusMethodNotAllowed, "Method Not Allowed", nil))
	}
}

// notify takes one NOTIFY and returns the answer's status.
func (w *Watcher) notify(req *sip.Request) (int, string) {
	callID := ""
	if c := req.CallID(); c != nil {
		callID = c.Value()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counts.Notifies++
	s := w.byCallID[callID]
	if s == nil {
		w.counts.Unknown++
		return sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist"
	}
	now := w.o.Clock.Now()
	if s.toTag == "" {
		if f := req.From(); f != nil {
			s.toTag, _ = f.Params.Get("tag")
		}
	}
	if c := req.Contact(); c != nil {
		u := c.Address
		s.remote = &u
	}
	state, params := subscriptionState(req)
	switch state {
	case "terminated":
		reason := params["reason"]
		w.log.Debug("The PBX ended a subscription", "upn", s.w.user.UPN, "event", s.event, "reason", reason)
		w.endDialogLocked(s)
		switch reason {
		case "rejected", "noresource", "invariant":
			s.phase = phaseRefused
			s.due = now.Add(w.o.Expires)
		default: // deactivated, timeout, probation, giveup: subscribe again
			s.phase = phaseNew
			s.due = now
			if ra, err := strconv.Atoi(params["retry-after"]); err == nil && ra > 0 {
				s.due = now.Add(time.Duration(ra) * time.Second)
			}
			w.counts.Reestablished++
		}
		w.setLineLocked(s, presence.PBXState{}, now)
		w.poke()
		return sip.StatusOK, "OK"
	case "active", "pending":
		if e, err := strconv.ParseUint(params["expires"], 10, 32); err == nil && e > 0 {
			s.expires = now.Add(time.Duration(e) * time.Second)
			if d := now.Add(time.Duration(e) * time.Second * 4 / 5); !s.busy && (s.due.IsZero() || d.Before(s.due)) {
				s.due = d
			}
		}
	}
	st, resubscribe, err := s.read(req.Body())
	if err != nil {
		w.counts.Ignored++
		if !s.garbled {
			s.garbled = true
			w.log.Warn("A NOTIFY from the PBX could not be read and was ignored", "upn", s.w.user.UPN,
				"event", s.event, "contentType", contentType(req), "err", err.Error())
		}
		return sip.StatusOK, "OK"
	}
	if resubscribe && !s.busy {
		// A gap in dialog-info versions: a refresh brings the full state.
		s.due = now
		w.poke()
	}
	w.setLineLocked(s, st, now)
	return sip.StatusOK, "OK"
}

func contentType(req *sip.Request) string {
	if h := req.ContentType(); h != nil {
		return h.Value()
	}
	return ""
}

// subscriptionState reads Subscription-State: "active;expires=600".
func subscriptionState(req *sip.Request) (string, map[string]string) {
	h := req.GetHeader("Subscription-State")
	if h == nil {
		return "", nil
	}
	parts := strings.Split(h.Value(), ";")
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		params[strings.ToLower(k)] = strings.Trim(v, `"`)
	}
	return strings.ToLower(strings.TrimSpace(parts[0])), params
}

// setLineLocked records what s says and recomputes its user's state.
func (w *Watcher) setLineLocked(s *subscription, st presence.PBXState, now time.Time) {
	s.line = st
	wu := s.w
	next := presence.PBXState{UPN: wu.user.UPN}
	for _, o := range wu.subs {
		next.Line = higher(next.Line, o.line.Line)
		next.DND = next.DND || o.line.DND
		next.Away = next.Away || o.line.Away
		next.Calls += o.line.Calls
	}
	if next.Line == presence.LineInCall || next.Line == presence.LineRinging {
		next.Away = false
	}
	if next.SameAs(wu.state) {
		return
	}
	next.Changed = now
	ch, ok := w.pending[wu.user.UPN]
	if !ok {
		ch = presence.PBXChange{User: wu.user, Previous: wu.state}
	}
	ch.Current = next
	wu.state = next
	w.pending[wu.user.UPN] = ch
	select {
	case w.emit <- struct{}{}:
	default:
	}
}

// lineRank orders lines from least to most engaged.
var lineRank = map[presence.Line]int{presence.LineUnknown: 0, presence.LineIdle: 1, presence.LineRinging: 2, presence.LineInCall: 3}

func higher(a, b presence.Line) presence.Line {
	if lineRank[b] > lineRank[a] {
		return b
	}
	return a
}

// emitter hands pending changes to Options.Changes, one batch at a time.
func (w *Watcher) emitter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.emit:
		}
		w.mu.Lock()
		batch := make([]presence.PBXChange, 0, len(w.pending))
		for upn, ch := range w.pending {
			delete(w.pending, upn)
			if !ch.Current.SameAs(ch.Previous) || ch.Previous.Changed.IsZero() && ch.Current.Known() {
				batch = append(batch, ch)
			}
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			slices.SortFunc(batch, func(a, b presence.PBXChange) int { return strings.Compare(a.User.UPN, b.User.UPN) })
			w.o.Changes(ctx, batch)
		}
	}
}

// State is the PBX's state of upn as last seen.
func (w *Watcher) State(upn string) (presence.PBXState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wu, ok := w.users[upn]
	if !ok {
		return presence.PBXState{}, false
	}
	return wu.state, true
}

// UserStatus is one user's subscriptions, for status.
type UserStatus struct {
	UPN    string            `json:"upn"`
	SIPURI string            `json:"sipUri"`
	State  presence.PBXState `json:"state"`
	// Subscriptions by event package: active, new, failed or refused.
	Subscriptions map[string]string `json:"subscriptions"`
	Error         string            `json:"error,omitempty"`
}

// Status is the watch's report.
type Status struct {
	Users      int    `json:"users"`
	Subscribed int    `json:"subscribed"` // users with every subscription active
	Failed     int    `json:"failed"`     // users with a subscription refused or failing
	InCall     int    `json:"inCall"`
	Counts     Counts `json:"counts"`
	// Problems are the users with a subscription refused or failing, the first
	// maxProblems by UPN.
	Problems []UserStatus `json:"problems,omitempty"`
	Each     []UserStatus `json:"each,omitempty"`
}

// maxProblems is how many users with a failing subscription Status lists.
const maxProblems = 50

// Status reports the totals and, with each, every user.
func (w *Watcher) Status(each bool) Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{Users: len(w.users), Counts: w.counts}
	for _, wu := range w.users {
		all, bad := true, false
		for _, s := range wu.subs {
			all = all && s.phase == phaseActive
			bad = bad || s.phase == phaseRefused || s.phase == phaseFailed
		}
		if all {
			st.Subscribed++
		}
		if bad {
			st.Failed++
			st.Problems = append(st.Problems, wu.status())
		}
		if wu.state.Line == presence.LineInCall {
			st.InCall++
		}
		if each {
			st.Each = append(st.Each, wu.status())
		}
	}
	byUPN := func(a, b UserStatus) int { return strings.Compare(a.UPN, b.UPN) }
	slices.SortFunc(st.Each, byUPN)
	slices.SortFunc(st.Problems, byUPN)
	st.Problems = st.Problems[:min(len(st.Problems), maxProblems)]
	return st
}

// User is upn's subscriptions and state, and false for a user not watched.
func (w *Watcher) User(upn string) (UserStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wu, ok := w.users[upn]
	if !ok {
		return UserStatus{}, false
	}
	return wu.status(), true
}

// status is wu's report (the watcher's lock held).
func (wu *watched) status() UserStatus {
	us := UserStatus{UPN: wu.user.UPN, SIPURI: wu.user.SIPURI, State: wu.state, Subscriptions: map[string]string{}}
	for _, s := range wu.subs {
		us.Subscriptions[s.event] = s.phase
		if us.Error == "" {
			us.Error = s.lastErr
		}
	}
	return us
}
