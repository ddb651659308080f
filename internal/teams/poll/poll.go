// Package poll is the per-account scheduler: it resolves UPNs to object ids, reads
// presence in chunks of 650 ids spread over each cycle inside the throttle budget,
// keeps each user's last state in the store and passes on only changes.
package poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/backoff"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Sink receives changes (the PBX side implements it). Deliver is called once per
// chunk read, as soon as its reply is in; the slice is reused afterwards, so a
// Sink that keeps changes must copy them.
type Sink interface {
	Deliver(ctx context.Context, changes []presence.Change) error
}

// LogSink logs one line per change.
type LogSink struct{ Logger *slog.Logger }

// Deliver logs each change with the UPN.
func (s LogSink) Deliver(_ context.Context, changes []presence.Change) error {
	for _, c := range changes {
		s.Logger.Info("Presence changed", "upn", c.User.UPN,
			"from", string(c.Previous.Availability)+"/"+string(c.Previous.Activity),
			"to", string(c.Current.Availability)+"/"+string(c.Current.Activity),
			"outOfOffice", c.Current.OutOfOffice)
	}
	return nil
}

// GraphAPI is the part of graph.Client the poller uses.
type GraphAPI interface {
	ResolveUsers(ctx context.Context, upns []string) (map[string]graph.User, []string, error)
	GetPresences(ctx context.Context, ids []string) ([]graph.Presence, error)
}

// Settings are the [Polling] keys of a poller.
type Settings struct {
	// Interval is the wanted cycle time; the budget may make cycles longer.
	Interval time.Duration
	// RequestTimeout bounds each Graph request.
	RequestTimeout time.Duration
	// ResolveInterval is how often UPNs are resolved to object ids again; 0 never.
	ResolveInterval time.Duration
	// ResolveRate is $batch requests per second at most while resolving.
	ResolveRate float64
}

// DefaultSettings are [Polling]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{Interval: 10 * time.Second, RequestTimeout: 20 * time.Second, ResolveInterval: 24 * time.Hour, ResolveRate: 10}
}

// Options configure one account's poller.
type Options struct {
	Settings
	Account        string
	Users          []users.User
	Graph          GraphAPI
	Store          *store.DB
	Sink           Sink
	Budget         *budget.Budget
	Clock          clock.Clock
	Logger         *slog.Logger
	EmitAllOnStart bool
	MaxChunk       int // default 650
}

// Status is what `status` shows for an account's polling.
type Status struct {
	Account  string   `json:"account"`
	Users    int      `json:"users"`
	Resolved int      `json:"resolved"`
	Unknown  []string `json:"unknown,omitempty"`
	// Unresolved counts users whose lookup Graph keeps refusing; they are
	// looked up again every minute, the others are polled meanwhile.
	Unresolved        int           `json:"unresolved,omitempty"`
	CycleInterval     time.Duration `json:"cycleInterval"`
	RequestsPerCycle  int           `json:"requestsPerCycle"`
	Cycles            int           `json:"cycles"`
	LastCycleStart    time.Time     `json:"lastCycleStart,omitzero"`
	LastCycleDuration time.Duration `json:"lastCycleDuration"`
	// LastCycleOK is false from the first failed request of a cycle (shown at
	// once, not when the cycle ends: a 429 storm can hold a cycle for minutes)
	// until a cycle reads every chunk.
	LastCycleOK bool `json:"lastCycleOK"`
	// LastGoodCycle is when the last cycle that read every chunk ended.
	LastGoodCycle     time.Time `json:"lastGoodCycle,omitzero"`
	LastError         string    `json:"lastError,omitempty"`
	RequestsInWindow  int       `json:"requestsInWindow"`
	BudgetShareUsed   float64   `json:"budgetShareUsed"`
	Throttled         int       `json:"throttled"`
	ThrottledLastHour int       `json:"throttledLastHour"`
	ChangesEmitted    int       `json:"changesEmitted"`
}

// Poller polls one account.
type Poller struct {
	o       Options
	byUPN   map[string]int    // UPN -> index in o.Users
	ids     map[string]string // UPN -> object id
	byID    map[string]string // object id -> UPN
	states  map[string]presence.State
	unknown map[string]bool
	seenVal map[string]bool // unknown presence values already logged
	lastErr string
	// unresolved counts users whose lookup failed (Graph refused the $batch);
	// they are looked up again from resolveRetry on, the others are polled meanwhile.
	unresolved   int
	resolveRetry time.Time

	mu          sync.Mutex
	st          Status
	throttledAt []time.Time // 429s in the last hour, oldest first
}

// New builds a poller and loads the ids and states kept from earlier runs.
func New(o Options) (*Poller, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.MaxChunk <= 0 || o.MaxChunk > graph.MaxPresenceIDs {
		o.MaxChunk = graph.MaxPresenceIDs
	}
	if o.Interval <= 0 || o.RequestTimeout <= 0 || o.ResolveInterval < 0 || o.ResolveRate <= 0 {
		return nil, errors.New("poll.New: incomplete Settings (start from DefaultSettings, or config's [Polling])")
	}
	p := &Poller{o: o, byUPN: make(map[string]int, len(o.Users)), ids: map[string]string{}, byID: map[string]string{},
		states: map[string]presence.State{}, unknown: map[string]bool{}, seenVal: map[string]bool{}}
	upns := make([]string, len(o.Users))
	for i, u := range o.Users {
		p.byUPN[u.UPN] = i
		upns[i] = u.UPN
	}
	ids, states, err := loadKept(o.Store, upns, !o.EmitAllOnStart)
	if err != nil {
		return nil, err
	}
	p.ids, p.states = ids, states
	for upn, id := range ids {
		p.byID[id] = upn
	}
	p.st = Status{Account: o.Account, Users: len(p.byUPN), Resolved: len(p.ids)}
	return p, nil
}

// Status returns a copy of the current status.
func (p *Poller) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.Unknown = append([]string(nil), s.Unknown...)
	// Keep the 429 times of the last hour only.
	hourAgo := p.o.Clock.Now().Add(-time.Hour)
	i := 0
	for i < len(p.throttledAt) && p.throttledAt[i].Before(hourAgo) {
		i++
	}
	p.throttledAt = p.throttledAt[i:]
	s.ThrottledLastHour = len(p.throttledAt)
	if p.o.Budget != nil {
		s.RequestsInWindow, s.BudgetShareUsed = p.o.Budget.Used()
	}
	return s
}

// Run resolves users, then polls in cycles that never overlap, until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	if err := p.resolve(ctx, false); err != nil {
		return err
	}
	lastResolve := p.o.Clock.Now()
	chunks := p.chunks()
	interval := max(p.o.Interval, p.o.Budget.MinCycle(len(chunks)))
	p.o.Logger.Info(fmt.Sprintf("Polling %d users in %d requests per cycle; cycle every %s (configured %s, budget allows %s)",
		len(p.ids), len(chunks), interval, p.o.Interval, p.o.Budget.MinCycle(len(chunks))))
	for {
		start := p.o.Clock.Now()
		p.cycle(ctx, chunks, interval)
		if ctx.Err() != nil {
			return nil
		}
		elapsed := p.o.Clock.Now().Sub(start)
		if elapsed > interval+interval/2 {
			p.o.Logger.Warn("Poll cycle overran its interval", "took", elapsed, "interval", interval)
		}
		again := p.o.ResolveInterval > 0 && p.o.Clock.Now().Sub(lastResolve) >= p.o.ResolveInterval
		if again || p.unresolved > 0 && !p.o.Clock.Now().Before(p.resolveRetry) {
			if err := p.resolve(ctx, again); err != nil {
				return nil
			}
			if again {
				lastResolve = p.o.Clock.Now()
			}
			chunks = p.chunks()
			interval = max(p.o.Interval, p.o.Budget.MinCycle(len(chunks)))
		}
		if err := p.o.Clock.Sleep(ctx, interval-elapsed); err != nil {
			return nil
		}
	}
}

// chunks splits the resolved ids into requests of at most MaxChunk.
func (p *Poller) chunks() [][]string {
	ids := make([]string, 0, len(p.ids))
	for _, u := range p.o.Users {
		if id, ok := p.ids[u.UPN]; ok {
			ids = append(ids, id)
		}
	}
	var out [][]string
	for len(ids) > 0 {
		n := min(len(ids), p.o.MaxChunk)
		out = append(out, ids[:n:n])
		ids = ids[n:]
	}
	p.mu.Lock()
	p.st.RequestsPerCycle = len(out)
	p.mu.Unlock()
	return out
}

// fetchBackoff is how a presence read that failed is tried again: after 1 s, then
// 2 s and 4 s (a 429 without Retry-After pauses as long); a chunk is given up for
// the cycle after four tries.
var fetchBackoff = backoff.Policy{Min: time.Second, Max: 30 * time.Second}

// resolveTries is how often a failing $batch of user lookups is tried before its
// users are left unresolved until resolveRetryWait later (the other users are
// polled meanwhile), and the wait between two tries.
const (
	resolveTries     = 3
	resolveTryWait   = 5 * time.Second
	resolveRetryWait = time.Minute
)

// resolve looks up UPNs without an id (or all, when again is set) in $batch calls of
// 20, paced by ResolveRate. An unknown UPN is logged once by name. A batch Graph
// keeps refusing (not throttling) is left for later after resolveTries, so one
// lookup Graph cannot answer does not keep every user from being polled.
func (p *Poller) resolve(ctx context.Context, again bool) error {
	var todo []string
	for _, u := range p.o.Users {
		if _, ok := p.ids[u.UPN]; !ok && !p.unknown[u.UPN] || again {
			todo = append(todo, u.UPN)
		}
	}
	p.unresolved = 0
	pace := time.Duration(float64(time.Second) / p.o.ResolveRate)
	tries := 0
	for len(todo) > 0 {
		n := min(len(todo), graph.MaxBatch)
		batch := todo[:n]
		rctx, cancel := context.WithTimeout(ctx, p.o.RequestTimeout)
		found, notFound, err := p.o.Graph.ResolveUsers(rctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var te *graph.ThrottledError
			wait := resolveTryWait
			throttled := errors.As(err, &te)
			if throttled && te.HasRetryAfter {
				wait = te.RetryAfter
			}
			p.noteError(fmt.Errorf("resolve users: %w", err))
			if tries++; !throttled && tries >= resolveTries {
				p.unresolved += n
				p.resolveRetry = p.o.Clock.Now().Add(resolveRetryWait)
				todo, tries = todo[n:], 0
				continue
			}
			if err := p.o.Clock.Sleep(ctx, wait); err != nil {
				return err
			}
			continue
		}
		tries = 0
		now := p.o.Clock.Now().UTC()
		entries := map[string][]byte{}
		for upn, u := range found {
			p.ids[upn] = u.ID
			p.byID[u.ID] = upn
			delete(p.unknown, upn)
			entries[upn] = encodeResolved(resolved{ID: u.ID, UPN: upn, ResolvedAt: now})
		}
		for _, upn := range notFound {
			if !p.unknown[upn] {
				p.o.Logger.Warn("Teams user not found; check the UPN in the users file", "upn", upn, "line", p.o.Users[p.byUPN[upn]].Line)
			}
			p.unknown[upn] = true
			if id, ok := p.ids[upn]; ok {
				delete(p.byID, id)
				delete(p.ids, upn)
			}
			entries[upn] = encodeResolved(resolved{UPN: upn, ResolvedAt: now, NotFound: true})
		}
		if err := p.o.Store.PutMany(store.BucketUserIDs, entries); err != nil {
			return err
		}
		p.mu.Lock()
		p.st.Resolved = len(p.ids)
		p.st.Unknown = p.st.Unknown[:0]
		for upn := range p.unknown {
			p.st.Unknown = append(p.st.Unknown, upn)
		}
		p.mu.Unlock()
		todo = todo[n:]
		if len(todo) > 0 {
			if err := p.o.Clock.Sleep(ctx, pace); err != nil {
				return err
			}
		}
	}
	p.mu.Lock()
	p.st.Unresolved = p.unresolved
	p.mu.Unlock()
	return nil
}

// cycle reads every chunk once, spread evenly over interval, and passes on changes.
func (p *Poller) cycle(ctx context.Context, chunks [][]string, interval time.Duration) {
	start := p.o.Clock.Now()
	ok := true
	emitted := 0
	var changes []presence.Change
	pace := time.Duration(0)
	if len(chunks) > 0 {
		pace = interval / time.Duration(len(chunks))
	}
	for i, ids := range chunks {
		if i > 0 {
			// Spread requests evenly: chunk i is not sent before start + i*pace.
			if d := start.Add(time.Duration(i) * pace).Sub(p.o.Clock.Now()); d > 0 {
				if p.o.Clock.Sleep(ctx, d) != nil {
					return
				}
			}
		}
		ps, err := p.fetch(ctx, ids)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ok = false
			continue
		}
		// Each chunk's changes go on at once: a change waits for its own request,
		// not for the whole cycle, and memory holds at most one chunk of changes.
		changes = p.diff(ps, changes[:0])
		if !p.emit(ctx, changes) {
			ok = false
		}
		emitted += len(changes)
	}
	if ok {
		p.lastErr = ""
	}
	p.mu.Lock()
	p.st.Cycles++
	p.st.CycleInterval = interval
	p.st.LastCycleStart = start.UTC()
	p.st.LastCycleDuration = p.o.Clock.Now().Sub(start)
	p.st.LastCycleOK = ok
	if ok {
		p.st.LastError = ""
		p.st.LastGoodCycle = p.o.Clock.Now().UTC()
	}
	p.st.ChangesEmitted += emitted
	p.mu.Unlock()
}

// emit passes the changes to the sink, then keeps the changed states in the state
// file; false if either failed. The order matters when the process is killed
// between the two (they are separate transactions): kept first, a change not yet
// queued would be lost, because after the restart the kept state equals Graph's
// and no change is seen. Queued first, the restart sees the change again and
// queues it once more, which the outbox coalesces.
func (p *Poller) emit(ctx context.Context, changes []presence.Change) bool {
	if len(changes) == 0 {
		return true
	}
	if err := p.o.Sink.Deliver(ctx, changes); err != nil {
		p.noteError(fmt.Errorf("deliver changes: %w", err))
		// Not queued: the next cycle sees these changes again.
		for _, c := range changes {
			if c.Previous.Availability == "" {
				delete(p.states, c.User.UPN)
			} else {
				p.states[c.User.UPN] = c.Previous
			}
		}
		return false
	}
	entries := make(map[string][]byte, len(changes))
	for _, c := range changes {
		entries[c.User.UPN] = encodeState(c.Current)
	}
	if err := p.o.Store.PutMany(store.BucketPresence, entries); err != nil {
		p.noteError(err)
		return false
	}
	return true
}

// fetch reads one chunk inside the budget: a 429 pauses the budget for exactly
// Retry-After (exponential backoff without it), 5xx and network errors back off
// with jitter; after a few tries the chunk is skipped for this cycle.
func (p *Poller) fetch(ctx context.Context, ids []string) ([]graph.Presence, error) {
	wait := backoff.Backoff{Policy: fetchBackoff}
	const tries = 4
	var err error
	for try := 0; try < tries; try++ {
		if err = p.o.Budget.Wait(ctx); err != nil {
			return nil, err
		}
		rctx, cancel := context.WithTimeout(ctx, p.o.RequestTimeout)
		var ps []graph.Presence
		ps, err = p.o.Graph.GetPresences(rctx, ids)
		cancel()
		if err == nil {
			return ps, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p.noteAttempt(err)
		var te *graph.ThrottledError
		switch {
		case errors.As(err, &te):
			p.mu.Lock()
			p.st.Throttled++
			p.throttledAt = append(p.throttledAt, p.o.Clock.Now())
			p.mu.Unlock()
			pause := wait.Next()
			if te.HasRetryAfter {
				pause = te.RetryAfter
			}
			p.o.Logger.Warn("Graph throttled presence reads; pausing", "retryAfter", pause)
			p.o.Budget.PauseUntil(p.o.Clock.Now().Add(pause))
		case graph.IsTransient(err):
			if p.o.Clock.Sleep(ctx, wait.Next()) != nil {
				return nil, ctx.Err()
			}
		default:
			p.noteError(err)
			return nil, err
		}
	}
	p.noteError(err)
	return nil, err
}

// noteAttempt shows a failed request in status at once: the latest error (an
// outage that began with "connection refused" goes on with timeouts) and a cycle
// that is not good. fetch logs only when it gives up on the chunk.
func (p *Poller) noteAttempt(err error) {
	p.mu.Lock()
	p.st.LastError = err.Error()
	p.st.LastCycleOK = false
	p.mu.Unlock()
}

// noteError records err for status and logs each distinct error once.
func (p *Poller) noteError(err error) {
	msg := err.Error()
	var logged interface{ Logged() bool }
	if msg != p.lastErr && !(errors.As(err, &logged) && logged.Logged()) {
		p.o.Logger.Error("Polling failed; users keep their last state", "err", msg)
	}
	p.lastErr = msg
	p.mu.Lock()
	p.st.LastError = msg
	p.mu.Unlock()
}

// diff normalises a chunk's presences and appends the users whose state changed.
func (p *Poller) diff(ps []graph.Presence, changes []presence.Change) []presence.Change {
	now := p.o.Clock.Now().UTC()
	for _, gp := range ps {
		upn, ok := p.byID[gp.ID]
		if !ok {
			continue
		}
		av, okA := presence.ParseAvailability(gp.Availability)
		act, okB := presence.ParseActivity(gp.Activity)
		if !okA {
			p.logValueOnce("availability", gp.Availability, upn)
		}
		if !okB {
			p.logValueOnce("activity", gp.Activity, upn)
		}
		cur := presence.State{UPN: upn, Availability: av, Activity: act, OutOfOffice: gp.OutOfOffice, Seen: now, Changed: now}
		prev, had := p.states[upn]
		if had && prev.SameAs(cur) {
			prev.Seen = now
			p.states[upn] = prev
			continue
		}
		p.states[upn] = cur
		changes = append(changes, presence.Change{User: p.o.Users[p.byUPN[upn]], Previous: prev, Current: cur})
	}
	return changes
}

func (p *Poller) logValueOnce(kind, v, upn string) {
	key := kind + "\x00" + v
	if p.seenVal[key] {
		return
	}
	p.seenVal[key] = true
	p.o.Logger.Warn("Unknown presence value from Graph; shown as PresenceUnknown", "kind", kind, "value", v, "upn", upn)
}
