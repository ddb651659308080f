package write

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/backoff"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
)

// Graph is what the writer calls (graph.Client).
type Graph interface {
	SetPresence(ctx context.Context, userID string, p graph.SetPresence) error
	ClearPresence(ctx context.Context, userID, sessionID string) error
}

// IDs gives a user's Graph object id (poll.KeptStates.ID).
type IDs interface {
	ID(upn string) (id string, ok bool, err error)
}

// Options configure one account's writer.
type Options struct {
	Settings
	Account string
	// AppID is the application (client) id: the sessionId of every write.
	AppID    string
	Graph    Graph
	IDs      IDs
	Budget   *budget.Budget
	Sessions SessionStore // nil: kept in memory only
	Clock    clock.Clock
	Logger   *slog.Logger
}

// Session is a presence session presencebridge holds for a user in Teams.
type Session struct {
	UserID  string
	Pair    Pair
	Set     time.Time // when Graph accepted the last setPresence
	Expires time.Time // when Teams lets it lapse unless renewed
}

// SessionStore keeps sessions across restarts (BoltSessions in the service); a
// nil session deletes.
type SessionStore interface {
	LoadSessions() (map[string]Session, error)
	SaveSession(upn string, s *Session) error
}

// retry is the schedule for a user whose write failed (not a 429: the budget
// pauses for that).
var retry = backoff.Policy{Min: 2 * time.Second, Max: 5 * time.Minute}

// denied is how long writes wait after Graph refused the permission (403).
const denied = 10 * time.Minute

// Writer shows one account's users' PBX states in Teams.
type Writer struct {
	o    Options
	log  *slog.Logger
	wake chan struct{}

	mu      sync.Mutex
	users   map[string]*user // by UPN
	counts  Counts
	lastErr string
	denied  time.Time // until when the permission is missing
	told    bool      // the missing permission was logged
	lat     latencies
}

type user struct {
	// want is the pair the PBX state asks for; nil: no session. known is false
	// until the PBX has said anything (after a restart, a kept session is left
	// alone until then).
	want    *Pair
	known   bool
	since   time.Time // when the PBX state behind want was first seen
	held    *Session
	due     time.Time // retry or renewal; zero: now if want and held differ
	busy    bool
	back    backoff.Backoff
	lastErr string
}

// Counts are what the writer did since start.
type Counts struct {
	Set, Renewed, Cleared, Failed, Throttled int
}

// New loads the kept sessions.
func New(o Options) (*Writer, error) {
	if o.AppID == "" || o.Graph == nil || o.IDs == nil || o.Budget == nil || o.Expiration <= 0 {
		return nil, errors.New("write.New: incomplete Options")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{o: o, log: o.Logger.With("account", o.Account), wake: make(chan struct{}, 1), users: map[string]*user{}}
	if o.Sessions != nil {
		kept, err := o.Sessions.LoadSessions()
		if err != nil {
			return nil, fmt.Errorf("read kept Teams sessions: %w", err)
		}
		now := o.Clock.Now()
		for upn, s := range kept {
			if s.Expires.After(now) {
				w.users[upn] = &user{held: &s, back: backoff.Backoff{Policy: retry}}
			} else {
				_ = o.Sessions.SaveSession(upn, nil) // lapsed in Teams by itself
			}
		}
	}
	return w, nil
}

// Held counts the sessions presencebridge holds in Teams now.
func (w *Writer) Held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, u := range w.users {
		if u.held != nil {
			n++
		}
	}
	return n
}

// Apply takes the users' new PBX states; the writes follow in Run.
func (w *Writer) Apply(changes []presence.PBXChange) {
	w.mu.Lock()
	for _, ch := range changes {
		u := w.users[ch.User.UPN]
		if u == nil {
			u = &user{back: backoff.Backoff{Policy: retry}}
			w.users[ch.User.UPN] = u
		}
		u.known = true
		p, ok := w.o.For(ch.Current)
		switch {
		case !ok:
			u.want = nil
		case u.want == nil || *u.want != p:
			u.want = &p
			u.since = ch.Current.Changed
		}
		u.due = time.Time{}
		u.back.Reset()
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Forget drops users no longer watched: their sessions are cleared.
func (w *Writer) Forget(upns []string) {
	w.mu.Lock()
	for _, upn := range upns {
		if u := w.users[upn]; u != nil {
			u.known, u.want, u.due = true, nil, time.Time{}
		}
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes until ctx ends: setPresence where the PBX asks for a pair the
// session does not show, a renewal at 80% of Expiration while it lasts, and
// clearPresence when it ends. One write at a time, each going before the
// account's polls in its throttle budget.
func (w *Writer) Run(ctx context.Context) error {
	for {
		next := w.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(w.o.Clock.Now()), 0))
		}
		t := w.o.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-w.wake:
		case <-t.C():
		}
		t.Stop()
	}
}

// inFlight is how many writes an account has under way at once: Graph's round
// trip (100 ms and more) would otherwise pace a burst of calls more than the
// budget does. Each still takes its slot in the budget.
const inFlight = 8

// drain makes every write due now, inFlight at a time, and returns when the
// next one falls due (zero: none waits).
func (w *Writer) drain(ctx context.Context) time.Time {
	sem := make(chan struct{}, inFlight)
	done := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		upn, u, next := w.nextWork()
		if u == nil {
			if len(sem) == 0 {
				return next
			}
			select { // a write that ends may make another due (a retry), and Apply new ones
			case <-done:
			case <-w.wake:
			case <-ctx.Done():
			}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.write(ctx, upn, u)
			<-sem
			done <- struct{}{}
		}()
	}
	return time.Time{}
}

// nextWork is the user to write now (the one waiting longest), or when the
// next one falls due.
func (w *Writer) nextWork() (string, *user, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.o.Clock.Now()
	var next time.Time
	if now.Before(w.denied) {
		return "", nil, w.denied
	}
	var bestUPN string
	var best *user
	var bestAt time.Time
	for upn, u := range w.users {
		if u.busy {
			continue
		}
		at, ok := w.dueAt(u)
		if !ok {
			continue
		}
		if at.After(now) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		if best == nil || at.Before(bestAt) || at.Equal(bestAt) && upn < bestUPN {
			bestUPN, best, bestAt = upn, u, at
		}
	}
	if best != nil {
		best.busy = true
	}
	return bestUPN, best, next
}

// dueAt is when u needs a write, and false when it needs none.
func (w *Writer) dueAt(u *user) (time.Time, bool) {
	switch {
	case !u.known:
		return time.Time{}, false // a kept session waits for the PBX's word
	case u.want == nil && u.held == nil:
		return time.Time{}, false
	case u.want != nil && (u.held == nil || u.held.Pair != *u.want):
		return u.due, true // zero: now
	case u.want == nil:
		return u.due, true
	}
	// Renewal: at 80% of the session's life.
	renew := u.held.Set.Add(w.o.Expiration * 4 / 5)
	if u.due.After(renew) {
		renew = u.due
	}
	return renew, true
}

// write makes one call for u.
func (w *Writer) write(ctx context.Context, upn string, u *user) {
	w.mu.Lock()
	want, held := u.want, u.held
	since := u.since
	w.mu.Unlock()
	var (
		err     error
		id      string
		renewal = want != nil && held != nil && held.Pair == *want
	)
	if held != nil {
		id = held.UserID
	} else {
		var ok bool
		id, ok, err = w.o.IDs.ID(upn)
		if err == nil && !ok {
			err = fmt.Errorf("%s has no Graph object id yet (the poller resolves it)", upn)
		}
	}
	if err == nil {
		if err = w.o.Budget.WaitFirst(ctx); err != nil {
			w.mu.Lock()
			u.busy = false
			w.mu.Unlock()
			return
		}
		if want != nil {
			err = w.o.Graph.SetPresence(ctx, id, graph.SetPresence{SessionID: w.o.AppID,
				Availability: want.Availability, Activity: want.Activity, Expiration: w.o.Expiration})
		} else {
			err = w.o.Graph.ClearPresence(ctx, id, w.o.AppID)
			if errors.Is(err, graph.ErrNoSession) {
				err = nil // it lapsed or was cleared already: the same outcome
			}
		}
	}
	now := w.o.Clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	u.busy = false
	if err == nil {
		u.lastErr = ""
		u.back.Reset()
		u.due = time.Time{}
		var saved *Session
		switch {
		case want == nil:
			u.held = nil
			w.counts.Cleared++
			w.log.Debug("Teams presence session cleared", "upn", upn)
		default:
			u.held = &Session{UserID: id, Pair: *want, Set: now, Expires: now.Add(w.o.Expiration)}
			saved = u.held
			if renewal {
				w.counts.Renewed++
			} else {
				w.counts.Set++
				if !since.IsZero() {
					w.lat.add(now.Sub(since))
				}
				w.log.Debug("Teams presence session set", "upn", upn, "availability", want.Availability, "activity", want.Activity)
			}
		}
		// Unlike the kept session, the write happened: losing the record costs
		// at most one expiration of stale state.
		if w.o.Sessions != nil {
			if serr := w.o.Sessions.SaveSession(upn, saved); serr != nil {
				w.log.Warn("Could not keep a Teams presence session in the state file", "upn", upn, "err", serr.Error())
			}
		}
		if w.denied.Before(now) {
			w.told = false
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	var te *graph.ThrottledError
	var se *graph.StatusError
	switch {
	case errors.As(err, &te):
		w.counts.Throttled++
		pause := te.RetryAfter
		if !te.HasRetryAfter || pause <= 0 {
			pause = 10 * time.Second
		}
		w.o.Budget.PauseUntil(now.Add(pause))
		u.due = now.Add(pause)
		return // not a failure of this user: the write is sent once the pause is over
	case errors.As(err, &se) && se.Status == http.StatusForbidden:
		w.denied = now.Add(denied)
		w.lastErr = fmt.Sprintf("%s: the app registration may not write presence; grant it the application permission Presence.ReadWrite.All with admin consent (a device-code account cannot write other users' presence)", err)
		if !w.told {
			w.told = true
			w.log.Error("Graph refuses to let presencebridge show PBX calls in Teams", "err", w.lastErr)
		}
	case errors.As(err, &se) && se.Status == http.StatusNotFound && want != nil:
		// The user is gone from the directory: its session too.
		u.held = nil
	}
	w.counts.Failed++
	u.lastErr = err.Error()
	w.lastErr = err.Error()
	u.due = now.Add(u.back.Next())
	w.log.Warn("A write to Teams presence failed; it is tried again", "upn", upn, "err", err.Error(), "retryIn", u.due.Sub(now).Round(time.Second))
}

// Status is what `status` shows for an account's writes.
type Status struct {
	Account   string        `json:"account"`
	Held      int           `json:"held"`    // sessions held in Teams
	Pending   int           `json:"pending"` // users whose write waits
	Counts    Counts        `json:"counts"`
	LastError string        `json:"lastError,omitempty"`
	Latency   LatencyReport `json:"latency"`
	// Each is every user with a session or a write waiting, with each.
	Each []UserStatus `json:"each,omitempty"`
}

// UserStatus is one user's write state.
type UserStatus struct {
	UPN     string    `json:"upn"`
	Want    string    `json:"want"` // "Busy/InACall", or "" for none
	Holds   string    `json:"holds"`
	Expires time.Time `json:"expires,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// Status reports the writer.
func (w *Writer) Status(each bool) Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := Status{Account: w.o.Account, Counts: w.counts, LastError: w.lastErr, Latency: w.lat.report()}
	for upn, u := range w.users {
		if u.held != nil {
			st.Held++
		}
		_, due := w.dueAt(u)
		renewal := u.want != nil && u.held != nil && u.held.Pair == *u.want
		if due && !renewal {
			st.Pending++
		}
		if each && (u.held != nil || u.want != nil) {
			st.Each = append(st.Each, u.status(upn))
		}
	}
	slices.SortFunc(st.Each, func(a, b UserStatus) int { return strings.Compare(a.UPN, b.UPN) })
	return st
}

// User is upn's write state, and false when presencebridge holds no session
// for upn and has none to write.
func (w *Writer) User(upn string) (UserStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.users[upn]
	if u == nil || u.held == nil && u.want == nil {
		return UserStatus{}, false
	}
	return u.status(upn), true
}

func (u *user) status(upn string) UserStatus {
	us := UserStatus{UPN: upn, Want: u.want.String(), Error: u.lastErr}
	if u.held != nil {
		us.Holds, us.Expires = u.held.Pair.String(), u.held.Expires
	}
	return us
}

// String is "Busy/InACall"; "" for nil.
func (p *Pair) String() string {
	if p == nil {
		return ""
	}
	return string(p.Availability) + "/" + string(p.Activity)
}
