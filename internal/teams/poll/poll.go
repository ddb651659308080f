// Package poll is the per-account scheduler: it resolves UPNs to object ids, reads
// presence in chunks of 650 ids spread over each cycle inside the throttle budget,
// keeps each user's last state in the store and passes on only changes.
package poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	FindByUPN(ctx context.Context, upns []string) (graph.Lookup, error)
	FindByMail(ctx context.Context, addrs []string) (graph.Lookup, error)
	LookupUPNs(ctx context.Context, upns []string) (graph.Lookup, error)
	GetPresences(ctx context.Context, ids []string) ([]graph.Presence, error)
}

// Settings are the [Polling] keys of a poller.
type Settings struct {
	// Interval is the wanted cycle time; 0 is auto: the fastest cycle the
	// budget allows for the users, never faster than MinInterval. The budget
	// may make any cycle longer.
	Interval time.Duration
	// MinInterval is auto's floor: a faster cycle gains nothing a person at a
	// phone would notice and only spends requests.
	MinInterval time.Duration
	// RequestTimeout bounds each Graph request.
	RequestTimeout time.Duration
	// ResolveInterval is how often UPNs are resolved to object ids again; 0 never.
	ResolveInterval time.Duration
	// ResolveRate is lookup requests ($batch) per second at most while resolving.
	ResolveRate float64
}

// DefaultSettings are [Polling]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{MinInterval: 2 * time.Second, RequestTimeout: 20 * time.Second, ResolveInterval: 24 * time.Hour, ResolveRate: 20}
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
	Account string `json:"account"`
	Users   int    `json:"users"`
	// Resolved counts users with an object id; while Resolving, more are
	// being looked up (and each is polled as soon as it is found).
	Resolved  int      `json:"resolved"`
	Resolving bool     `json:"resolving,omitempty"`
	Unknown   []string `json:"unknown,omitempty"`
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
	// OutOfOrder counts presences Graph answered with an older sequenceNumber
	// than one already read (a lagging replica): they were not taken.
	OutOfOrder int `json:"outOfOrder,omitempty"`
}

// userState is what the poller keeps in memory per user, by index in
// Options.Users: a few words, so 200,000 users fit in a few MiB.
type userState struct {
	av      presence.Availability
	act     presence.Activity
	seq     string // Graph's sequenceNumber of the state, "" when Graph gives none
	seen    int64  // UnixNano of the last read in this run; 0: not read yet
	changed int64  // UnixNano of State.Changed
	ooo     bool
	known   bool // a state was read (or kept from an earlier run)
}

func (s *userState) state(upn string) presence.State {
	if !s.known {
		return presence.State{}
	}
	st := presence.State{UPN: upn, Availability: s.av, Activity: s.act, OutOfOffice: s.ooo}
	if s.seen != 0 {
		st.Seen = time.Unix(0, s.seen).UTC()
	}
	if s.changed != 0 {
		st.Changed = time.Unix(0, s.changed).UTC()
	}
	return st
}

// Poller polls one account.
type Poller struct {
	o     Options
	byUPN map[string]int32 // UPN -> index in o.Users; read-only after New

	// mu guards what the resolver's goroutines and the poll loop share, and st.
	mu   sync.Mutex
	ids  []string         // object id by user index; "" not resolved
	byID map[string]int32 // object id -> user index
	// twins are the other users-file lines of an object id, by object id: one
	// Teams user behind two lines (a desk phone and a DECT handset, or the
	// UPN on one line and the mail address on another). Rare, so apart.
	twins   map[string][]int32
	unknown map[int32]bool
	fresh   []int32   // resolved and not yet in a cycle's chunks
	freshAt time.Time // when the oldest of fresh was resolved
	dirty   bool      // ids changed since the chunks were built
	lastErr string
	// resolveRetry is when the users whose lookup Graph kept refusing
	// (st.Unresolved) are looked up again; the others are polled meanwhile.
	resolveRetry time.Time
	// st is the status, and the counts the poller works from: users resolved
	// (st.Resolved), left for later (st.Unresolved), a resolve under way
	// (st.Resolving).
	st          Status
	throttledAt []time.Time // 429s in the last hour, oldest first

	wakeC chan struct{} // the resolver found users or finished

	results chan readResult // the reads' results, maxInFlight at most

	// The poll loop's own.
	inFlight int          // reads launched and not yet taken
	batch    []readResult // take's
	changes  []presence.Change
	states   []userState
	seenVal  map[string]bool // unknown presence values already logged
	chunked  [][]string      // the chunks of the last cycle
	changed  []int32         // the users of a chunk's changes, by index
}

// New builds a poller and loads the ids and states kept from earlier runs.
func New(o Options) (*Poller, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.MaxChunk <= 0 || o.MaxChunk > graph.MaxPresenceIDs {
		o.MaxChunk = graph.MaxPresenceIDs
	}
	if o.Interval < 0 || o.Interval == 0 && o.MinInterval <= 0 || o.RequestTimeout <= 0 || o.ResolveInterval < 0 || o.ResolveRate <= 0 {
		return nil, errors.New("poll.New: incomplete Settings (start from DefaultSettings, or config's [Polling])")
	}
	n := len(o.Users)
	p := &Poller{o: o, byUPN: make(map[string]int32, n), ids: make([]string, n), byID: make(map[string]int32, n),
		unknown: map[int32]bool{}, seenVal: map[string]bool{}, states: make([]userState, n), wakeC: make(chan struct{}, 1), dirty: true,
		results: make(chan readResult, maxInFlight)}
	p.st = Status{Account: o.Account, Users: n}
	upns := make([]string, n)
	for i, u := range o.Users {
		p.byUPN[u.UPN] = int32(i)
		upns[i] = u.UPN
	}
	ids, states, err := loadKept(o.Store, upns, !o.EmitAllOnStart)
	if err != nil {
		return nil, err
	}
	for upn, id := range ids {
		p.setID(p.byUPN[upn], id)
	}
	p.fresh = nil // kept ids are polled from the first cycle on
	for upn, s := range states {
		p.states[p.byUPN[upn]] = userState{av: s.Availability, act: s.Activity, ooo: s.OutOfOffice, known: true, changed: unixNano(s.Changed)}
	}
	return p, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// setID gives user i object id id ("" none); p.mu held (or New).
func (p *Poller) setID(i int32, id string) {
	old := p.ids[i]
	if old == id {
		return
	}
	if old != "" {
		p.dropID(i, old)
		p.st.Resolved--
	}
	p.ids[i] = id
	p.dirty = true
	if id == "" {
		return
	}
	p.st.Resolved++
	if first, taken := p.byID[id]; taken {
		if p.twins == nil {
			p.twins = map[string][]int32{}
		}
		p.twins[id] = append(p.twins[id], i)
		p.o.Logger.Info("Two lines of the users file are one Teams user; both are shown its presence",
			"upn", p.o.Users[i].UPN, "line", p.o.Users[i].Line, "sameAs", p.o.Users[first].UPN, "sameAsLine", p.o.Users[first].Line)
	} else {
		p.byID[id] = i
	}
	delete(p.unknown, i)
	if len(p.fresh) == 0 {
		p.freshAt = p.o.Clock.Now()
	}
	p.fresh = append(p.fresh, i)
}

// dropID takes user i off object id id (p.mu held): a twin takes its place.
func (p *Poller) dropID(i int32, id string) {
	tw := p.twins[id]
	if p.byID[id] == i {
		if len(tw) == 0 {
			delete(p.byID, id)
			return
		}
		p.byID[id], tw = tw[0], tw[1:]
	} else {
		for k, j := range tw {
			if j == i {
				tw = append(tw[:k:k], tw[k+1:]...)
				break
			}
		}
	}
	if len(tw) == 0 {
		delete(p.twins, id)
	} else {
		p.twins[id] = tw
	}
}

// primary reports whether user i is the one its object id is asked for (a
// twin's presence comes with the first line's).
func (p *Poller) primary(i int32) bool {
	id := p.ids[i]
	return id != "" && p.byID[id] == i
}

// wake tells the poll loop that the resolver found users or finished.
func (p *Poller) wake() {
	select {
	case p.wakeC <- struct{}{}:
	default:
	}
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

// freshWait is how long users just resolved wait for more before they are read
// in a request of fewer than MaxChunk, while the resolver is still finding more.
const freshWait = 250 * time.Millisecond

// Run polls in cycles that never overlap, until ctx ends. Users without an
// object id are resolved meanwhile (a goroutine), and each found is read at
// once, so the first presence comes with the first lookup's answer.
func (p *Poller) Run(ctx context.Context) error {
	lastResolve := p.o.Clock.Now()
	p.startResolve(ctx, false)
	var logged time.Duration
	for {
		if !p.isResolving() {
			now := p.o.Clock.Now()
			again := p.o.ResolveInterval > 0 && now.Sub(lastResolve) >= p.o.ResolveInterval
			p.mu.Lock()
			retry := p.st.Unresolved > 0 && !now.Before(p.resolveRetry)
			p.mu.Unlock()
			if again || retry {
				p.startResolve(ctx, again)
				if again {
					lastResolve = now
				}
			}
		}
		chunks := p.chunks()
		if len(chunks) == 0 {
			// Nothing to poll (yet): wait for the resolver, without a timer
			// that would run an injected clock on.
			if !p.idle(ctx, lastResolve) {
				return nil
			}
			continue
		}
		interval, fastest := p.interval(len(chunks))
		resolving := p.isResolving()
		if !resolving && interval != logged {
			logged = interval
			how := fmt.Sprintf("configured %s, budget allows %s", p.o.Interval, fastest)
			if p.o.Interval == 0 {
				how = fmt.Sprintf("auto: the budget allows %s, MinInterval %s", fastest, p.o.MinInterval)
			}
			p.o.Logger.Info(fmt.Sprintf("Polling %d users in %d requests per cycle; cycle every %s (%s)",
				p.resolvedCount(), len(chunks), interval, how))
		}
		start := p.o.Clock.Now()
		p.cycle(ctx, chunks, interval)
		if ctx.Err() != nil {
			return nil
		}
		elapsed := p.o.Clock.Now().Sub(start)
		if !resolving && elapsed > interval+interval/2 {
			p.o.Logger.Warn("Poll cycle overran its interval", "took", elapsed, "interval", interval)
		}
		var failed int // of fresh reads only: a cycle is judged by its own
		if !p.waitUntil(ctx, start.Add(interval), &failed) {
			return nil
		}
	}
}

// idle waits while there is nothing to poll: until the resolver finds users or
// ends, or, with no resolve under way, until the next is due; false when ctx
// ended.
func (p *Poller) idle(ctx context.Context, lastResolve time.Time) bool {
	p.mu.Lock()
	resolving, fresh := p.st.Resolving, len(p.fresh)
	var due time.Time
	if p.st.Unresolved > 0 {
		due = p.resolveRetry
	}
	p.mu.Unlock()
	if fresh > 0 {
		return true
	}
	if resolving {
		select {
		case <-ctx.Done():
			return false
		case <-p.wakeC:
			return true
		}
	}
	if p.o.ResolveInterval > 0 {
		if next := lastResolve.Add(p.o.ResolveInterval); due.IsZero() || next.Before(due) {
			due = next
		}
	}
	if due.IsZero() {
		<-ctx.Done()
		return false
	}
	return p.o.Clock.Sleep(ctx, due.Sub(p.o.Clock.Now())) == nil
}

// interval is the cycle for that many requests: Interval, or with auto the
// floor, but never faster than the budget allows (fastest).
func (p *Poller) interval(requests int) (interval, fastest time.Duration) {
	fastest = p.o.Budget.MinCycle(requests)
	want := p.o.Interval
	if want == 0 {
		want = p.o.MinInterval
	}
	return max(want, fastest), fastest
}

func (p *Poller) isResolving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Resolving
}

func (p *Poller) resolvedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.Resolved
}

// startResolve looks up, in a goroutine, the users without an object id (all,
// when again is set) that are not known to be missing.
func (p *Poller) startResolve(ctx context.Context, again bool) {
	p.mu.Lock()
	var todo []string
	for i, u := range p.o.Users {
		if again || p.ids[i] == "" && !p.unknown[int32(i)] {
			todo = append(todo, u.UPN)
		}
	}
	if len(todo) == 0 {
		p.mu.Unlock()
		return
	}
	p.st.Resolving = true
	p.st.Unresolved = 0
	p.mu.Unlock()
	go func() {
		if err := p.resolve(ctx, todo); err != nil && ctx.Err() == nil {
			p.noteError(err)
		}
		p.mu.Lock()
		p.st.Resolving = false
		p.mu.Unlock()
		p.wake()
	}()
}

// chunks splits the resolved ids, in the users file's order, into requests of
// at most MaxChunk. Users resolved since are in them, so they are no longer
// fresh.
func (p *Poller) chunks() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fresh = p.fresh[:0]
	if !p.dirty {
		return p.chunked
	}
	p.dirty = false
	ids := make([]string, 0, p.st.Resolved)
	for i, id := range p.ids {
		if p.primary(int32(i)) {
			ids = append(ids, id)
		}
	}
	var out [][]string
	for len(ids) > 0 {
		n := min(len(ids), p.o.MaxChunk)
		out = append(out, ids[:n:n])
		ids = ids[n:]
	}
	p.chunked = out
	p.st.RequestsPerCycle = len(out)
	return out
}

// maxInFlight is how many presence reads may be under way at once. Graph
// takes a few hundred milliseconds over a read of 650 users, and a cycle of
// 200,000 users at the budget's pace sends 150 a second: one at a time would
// stretch every cycle to a minute. The budget paces them; this only bounds
// connections and memory (a reply is about 150 KB).
const maxInFlight = 32

// readResult is one presence read's outcome.
type readResult struct {
	ps    []graph.Presence
	err   error
	fresh bool // a read of users just resolved, not of the cycle's chunks
}

// launch starts reading ids (within the budget; fetch's retries included),
// its result to come on p.results.
func (p *Poller) launch(ctx context.Context, ids []string, fresh bool) {
	p.inFlight++
	go func() {
		ps, err := p.fetch(ctx, ids)
		p.results <- readResult{ps: ps, err: err, fresh: fresh}
	}()
}

// maxTake is the most reads whose changes take passes on together: at a cold
// start every user is a change, and 32 reads of 650 in one transaction would
// hold 20,000 outbox items and their pages in memory at once.
const maxTake = 4

// take handles r and every other result already in (up to maxTake): their changes go on in
// one Deliver and one write of the state file (so a busy cycle does not
// commit the state file once per read). It counts the cycle's reads that
// failed, and those whose changes could not be passed on, in failed.
func (p *Poller) take(ctx context.Context, r readResult, failed *int) {
	batch := append(p.batch[:0], r)
	for more := true; more && len(batch) < maxTake; {
		select {
		case r := <-p.results:
			batch = append(batch, r)
		default:
			more = false
		}
	}
	p.batch = batch
	changes := p.changes[:0]
	p.changed = p.changed[:0]
	reads := 0
	for _, r := range batch {
		p.inFlight--
		if r.err != nil {
			if !r.fresh && ctx.Err() == nil {
				*failed++
			}
			continue
		}
		if !r.fresh {
			reads++
		}
		changes = p.diff(r.ps, changes)
	}
	p.changes = changes
	if !p.emit(ctx, changes) {
		*failed += max(reads, 1)
	}
	p.mu.Lock()
	p.st.ChangesEmitted += len(changes)
	p.mu.Unlock()
	clear(changes) // no Change keeps its strings alive past its delivery
}

// waitUntil waits until t, handling results as they come and reading users
// as they are resolved; false when ctx ended.
func (p *Poller) waitUntil(ctx context.Context, t time.Time, failed *int) bool {
	for {
		p.readFresh(ctx)
		now := p.o.Clock.Now()
		d := t.Sub(now)
		if d <= 0 {
			return true
		}
		p.mu.Lock()
		if len(p.fresh) > 0 {
			d = min(d, max(p.freshAt.Add(freshWait).Sub(now), time.Millisecond))
		}
		p.mu.Unlock()
		tm := p.o.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			tm.Stop()
			return false
		case <-tm.C():
		case <-p.wakeC:
			tm.Stop()
		case r := <-p.results:
			tm.Stop()
			p.take(ctx, r, failed)
		}
	}
}

// await waits for one result and handles it; false when ctx ended.
func (p *Poller) await(ctx context.Context, failed *int) bool {
	select {
	case <-ctx.Done():
		return false
	case r := <-p.results:
		p.take(ctx, r, failed)
		return true
	}
}

// readFresh starts reading the users resolved since the cycle began, in full
// chunks, or in a smaller one once the resolver has stopped or they waited
// freshWait.
func (p *Poller) readFresh(ctx context.Context) {
	for p.inFlight < maxInFlight {
		p.mu.Lock()
		n := len(p.fresh)
		ready := n >= p.o.MaxChunk || n > 0 && (!p.st.Resolving || !p.o.Clock.Now().Before(p.freshAt.Add(freshWait)))
		if !ready {
			p.mu.Unlock()
			return
		}
		n = min(n, p.o.MaxChunk)
		ids := make([]string, 0, n)
		for _, i := range p.fresh[:n] {
			if id := p.ids[i]; id != "" {
				// A twin's first line is asked for, so both are read.
				ids = append(ids, id)
			}
		}
		p.fresh = append(p.fresh[:0], p.fresh[n:]...)
		p.freshAt = p.o.Clock.Now()
		p.mu.Unlock()
		slices.Sort(ids)
		if ids = slices.Compact(ids); len(ids) > 0 {
			p.launch(ctx, ids, true)
		}
	}
}

// fetchBackoff is how a presence read that failed is tried again: after 1 s, then
// 2 s and 4 s (a 429 without Retry-After pauses as long); a chunk is given up for
// the cycle after four tries.
var fetchBackoff = backoff.Policy{Min: time.Second, Max: 30 * time.Second}

// cycle reads every chunk once, the reads spread evenly over interval (up to
// maxInFlight under way), and passes on changes as the replies come.
func (p *Poller) cycle(ctx context.Context, chunks [][]string, interval time.Duration) {
	start := p.o.Clock.Now()
	failed := 0
	pace := interval / time.Duration(len(chunks))
	for i, ids := range chunks {
		// Chunk i is not sent before start + i*pace; users resolved meanwhile
		// are read in the gaps.
		if !p.waitUntil(ctx, start.Add(time.Duration(i)*pace), &failed) {
			return
		}
		for p.inFlight >= maxInFlight {
			if !p.await(ctx, &failed) {
				return
			}
		}
		p.launch(ctx, ids, false)
	}
	for p.inFlight > 0 {
		if !p.await(ctx, &failed) {
			return
		}
	}
	if ctx.Err() != nil {
		return // a read cut short by the stop is no verdict on the cycle
	}
	ok := failed == 0
	p.mu.Lock()
	if ok {
		p.lastErr = ""
	}
	p.st.Cycles++
	p.st.CycleInterval = interval
	p.st.LastCycleStart = start.UTC()
	p.st.LastCycleDuration = p.o.Clock.Now().Sub(start)
	p.st.LastCycleOK = ok
	if ok {
		p.st.LastError = ""
		p.st.LastGoodCycle = p.o.Clock.Now().UTC()
	}
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
		for k, c := range changes {
			s := &p.states[p.changed[k]]
			if c.Previous.Availability == "" {
				*s = userState{}
			} else {
				s.av, s.act, s.ooo, s.changed = c.Previous.Availability, c.Previous.Activity, c.Previous.OutOfOffice, unixNano(c.Previous.Changed)
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
	p.mu.Lock()
	again := msg == p.lastErr
	p.lastErr = msg
	p.st.LastError = msg
	p.mu.Unlock()
	if !again && !(errors.As(err, &logged) && logged.Logged()) {
		p.o.Logger.Error("Polling failed; users keep their last state", "err", msg)
	}
}

// diff normalises a chunk's presences and appends the users whose state changed
// (their indexes go to p.changed). A change's Changed is its estimated moment in
// Teams: midway between this read and the one before that still showed the old
// state (this read, when there was none in this run). A presence with an older
// sequenceNumber than the one already read is not taken.
func (p *Poller) diff(ps []graph.Presence, changes []presence.Change) []presence.Change {
	now := p.o.Clock.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range ps {
		gp := &ps[k]
		i, ok := p.byID[gp.ID]
		if !ok {
			continue
		}
		changes = p.diffUser(i, gp, now, changes)
		for _, j := range p.twins[gp.ID] {
			changes = p.diffUser(j, gp, now, changes)
		}
	}
	return changes
}

// diffUser is diff for user i (p.mu held).
func (p *Poller) diffUser(i int32, gp *graph.Presence, now int64, changes []presence.Change) []presence.Change {
	s := &p.states[i]
	if gp.SequenceNumber != "" && s.seq != "" && gp.SequenceNumber < s.seq {
		p.st.OutOfOrder++
		return changes
	}
	upn := p.o.Users[i].UPN
	av, okA := presence.ParseAvailability(gp.Availability)
	act, okB := presence.ParseActivity(gp.Activity)
	if !okA {
		p.logValueOnce("availability", gp.Availability, upn)
	}
	if !okB {
		p.logValueOnce("activity", gp.Activity, upn)
	}
	s.seq = gp.SequenceNumber
	before := s.seen
	if s.known && s.av == av && s.act == act && s.ooo == gp.OutOfOffice {
		s.seen = now
		return changes
	}
	prev := s.state(upn)
	s.seen = now
	at := now
	if before != 0 {
		at = before + (now-before)/2
	}
	s.av, s.act, s.ooo, s.known, s.changed = av, act, gp.OutOfOffice, true, at
	changes = append(changes, presence.Change{User: p.o.Users[i], Previous: prev, Current: s.state(upn)})
	p.changed = append(p.changed, i)
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
