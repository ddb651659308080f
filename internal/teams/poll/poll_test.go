package poll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

const presencePath = "/v1.0/communications/getPresencesByUserId"

type countingSink struct {
	mu      sync.Mutex
	changes []presence.Change
}

func (s *countingSink) Deliver(_ context.Context, cs []presence.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes = append(s.changes, cs...)
	return nil
}

func (s *countingSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.changes)
}

type rig struct {
	sim *graphsim.Server
	clk *clock.Fake
	db  *store.DB
	gc  *graph.Client
	us  []users.User
}

func newRig(t *testing.T, nUsers, limit int) *rig {
	t.Helper()
	return newSimRig(t, graphsim.Options{Users: nUsers, ThrottleLimit: limit})
}

// newSimRig is a simulated tenant made with o on an injected clock (its
// engine stepped by hand, a 30 s throttle window unless o says), a state file,
// a Graph client signed in as the tenant's daemon app, and the tenant's
// generated users (o.Users of them, not o.ExtraUsers) as the users file.
func newSimRig(t *testing.T, o graphsim.Options) *rig {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	o.Clock, o.ManualEngine = clk, true
	if o.ThrottleWindow == 0 {
		o.ThrottleWindow = 30 * time.Second
	}
	sim, err := graphsim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	tok, err := sim.AppToken("presencebridge-daemon")
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rig{sim: sim, clk: clk, db: db, gc: graph.New(sim.GraphURL(), sim.Client(), tokenString(tok))}
	for i, u := range sim.Users()[:o.Users] {
		r.us = append(r.us, users.User{UPN: u.UPN, Extension: "1", Line: i + 2})
	}
	return r
}

type tokenString string

func (t tokenString) Token(context.Context) (string, error) { return string(t), nil }

// run polls until cycles cycles have completed, then stops the poller.
func (r *rig) run(t *testing.T, sink Sink, cycles int, share float64, limit int) *Poller {
	t.Helper()
	p, err := New(Options{Settings: filled(Settings{Interval: time.Second, RequestTimeout: 10 * time.Second, ResolveRate: 1}), Account: "a", Users: r.us, Graph: r.gc, Store: r.db, Sink: sink, Budget: budget.New(limit, 30*time.Second, share, r.clk), Clock: r.clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for p.Status().Cycles < cycles {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("only %d cycles ran", p.Status().Cycles)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	return p
}

// filled gives s the interval, timeout and resolve rate it leaves out; UPNs are
// not resolved again unless s sets ResolveInterval.
func filled(s Settings) Settings {
	d := DefaultSettings()
	if s.MinInterval == 0 {
		s.MinInterval = d.MinInterval
	}
	if s.RequestTimeout == 0 {
		s.RequestTimeout = d.RequestTimeout
	}
	if s.ResolveRate == 0 {
		s.ResolveRate = d.ResolveRate
	}
	return s
}

func TestIntegrationChunksBudgetAndRestart(t *testing.T) {
	r := newRig(t, 1301, 60)
	sink := &countingSink{}
	p := r.run(t, sink, 6, 0.6, 60)

	st := r.sim.Stats()
	if st.Throttled != 0 {
		t.Fatalf("%d requests were throttled; the budget should keep them under the limit", st.Throttled)
	}
	// Chunks of 650: 1,301 users take 650 + 650 + 1 ids per cycle, once all
	// are resolved (before, users are read as their lookups answer).
	var sizes []int
	for _, rec := range st.Requests {
		if rec.Path == presencePath {
			sizes = append(sizes, rec.IDs)
		}
	}
	// A cycle's reads are under way together, so they may reach the tenant in
	// any order, and the last cycle may have been cut short.
	cyclesOf650 := func(n int) bool {
		for k := n - 9; k < n; k += 3 {
			g := slices.Clone(sizes[k : k+3])
			slices.Sort(g)
			if !slices.Equal(g, []int{1, 650, 650}) {
				return false
			}
		}
		return true
	}
	if n := len(sizes); n < 12 || !cyclesOf650(n) && !cyclesOf650(n-1) && !cyclesOf650(n-2) {
		t.Fatalf("request sizes = %v, want 650,650,1 per cycle", sizes)
	}
	// Budget: 60% of 60 per 30 s = 36, counted at the simulated tenant over every
	// window (presence reads only: lookups have the directory's throttle), +1 for
	// the limiter's burst.
	for app, n := range st.MaxInWindow {
		if n > 37 {
			t.Fatalf("app %s sent %d requests in one 30 s window; budget share allows 36", app, n)
		}
	}
	if got := sink.count(); got != 1301 {
		t.Fatalf("first run emitted %d changes, want 1301 (every user seen once, then no noise)", got)
	}
	if s := p.Status(); s.RequestsPerCycle != 3 || s.Resolved != 1301 {
		t.Fatalf("status = %+v", s)
	}

	// A change reaches the sink once; a restart on the same store emits nothing old.
	if _, err := r.sim.SetPresence(r.us[5].UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	sink2 := &countingSink{}
	r.run(t, sink2, 3, 0.6, 60)
	if sink2.count() != 1 || sink2.changes[0].User.UPN != r.us[5].UPN || sink2.changes[0].Current.Activity != "InACall" {
		t.Fatalf("after restart and one change the sink got %d changes: %+v", sink2.count(), sink2.changes)
	}
}

func TestIntegrationRetryAfterObeyed(t *testing.T) {
	r := newRig(t, 30, 1500)
	r.sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 429, RetryAfter: "7"})
	p := r.run(t, &countingSink{}, 2, 0.6, 1500)
	var recs []graphsim.RequestRecord
	for _, rec := range r.sim.Stats().Requests {
		if rec.Path == presencePath {
			recs = append(recs, rec)
		}
	}
	if len(recs) < 2 || recs[0].Status != 429 {
		t.Fatalf("presence requests = %+v, want a 429 first", recs)
	}
	if gap := recs[1].At.Sub(recs[0].At); gap < 7*time.Second {
		t.Fatalf("next request came %v after a 429 with Retry-After: 7", gap)
	}
	if st := p.Status(); st.Throttled != 1 || st.ThrottledLastHour != 1 {
		t.Errorf("throttled %d, in the last hour %d; want 1 and 1", st.Throttled, st.ThrottledLastHour)
	}
	r.clk.Advance(61 * time.Minute)
	if st := p.Status(); st.Throttled != 1 || st.ThrottledLastHour != 0 {
		t.Errorf("an hour later: throttled %d, in the last hour %d; want 1 and 0", st.Throttled, st.ThrottledLastHour)
	}
}

func TestIntegrationUnknownUserAndValueLoggedOnce(t *testing.T) {
	r := newRig(t, 40, 1500)
	r.us = append(r.us, users.User{UPN: "ghost@contoso.example", Extension: "9", Line: 99})
	if _, err := r.sim.SetPresence(r.us[3].UPN, "Focusing", "DeepWork"); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.Buffer{}
	sink := &countingSink{}
	p, err := New(Options{Settings: filled(Settings{Interval: time.Second, ResolveRate: 5}), Account: "a", Users: r.us, Graph: r.gc, Store: r.db, Sink: sink, Budget: budget.New(1500, 30*time.Second, 0.6, r.clk), Clock: r.clk, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for p.Status().Cycles < 4 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	out := logs.String()
	if n := strings.Count(out, "Teams user not found"); n != 1 || !strings.Contains(out, "ghost@contoso.example") {
		t.Fatalf("unknown UPN logged %d times, want once by name:\n%s", n, out)
	}
	if n := strings.Count(out, "value=DeepWork"); n != 1 {
		t.Fatalf("unknown activity logged %d times, want once:\n%s", n, out)
	}
	if s := p.Status(); s.Resolved != 40 || len(s.Unknown) != 1 {
		t.Fatalf("status resolved=%d unknown=%v", s.Resolved, s.Unknown)
	}
	if sink.count() != 40 {
		t.Fatalf("sink got %d changes, want the 40 known users once", sink.count())
	}
	for _, c := range sink.changes {
		if c.User.UPN == r.us[3].UPN && c.Current.Activity != "PresenceUnknown" {
			t.Fatalf("unknown activity became %q, want PresenceUnknown", c.Current.Activity)
		}
	}
}

// 5xx replies back off exponentially with ±20% jitter (1 s, 2 s, 4 s) and the chunk
// is read in the same cycle once the tenant answers again.
func TestIntegrationServerErrorsBackOffWithJitter(t *testing.T) {
	r := newRig(t, 30, 1500)
	r.sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 503, Count: 3})
	sink := &countingSink{}
	r.run(t, sink, 1, 0.6, 1500)
	var recs []graphsim.RequestRecord
	for _, rec := range r.sim.Stats().Requests {
		if rec.Path == presencePath {
			recs = append(recs, rec)
		}
	}
	if len(recs) < 4 || recs[0].Status != 503 || recs[1].Status != 503 || recs[2].Status != 503 || recs[3].Status != 200 {
		t.Fatalf("presence requests = %+v, want 503, 503, 503, 200", recs)
	}
	exact := 0
	for i, base := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		gap := recs[i+1].At.Sub(recs[i].At)
		lo, hi := base*8/10, base*12/10+50*time.Millisecond
		if gap < lo || gap > hi {
			t.Errorf("retry %d came %v after the 503, want %v..%v (%v ±20%%)", i+1, gap, lo, hi, base)
		}
		if gap.Round(10*time.Millisecond) == base {
			exact++
		}
	}
	if exact == 3 {
		t.Error("all three retries came at exactly 1 s, 2 s, 4 s: no jitter")
	}
	if sink.count() != 30 {
		t.Errorf("sink got %d users in the first cycle, want all 30 after the retries", sink.count())
	}
}

// A cycle that cannot read a chunk is not a good cycle: LastGoodCycle (which the
// stale policy watches) moves only when every chunk was read.
func TestLastGoodCycleOnlyAfterAFullRead(t *testing.T) {
	r := newRig(t, 30, 1500)
	r.sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 500, Count: 1000})
	p := r.run(t, &countingSink{}, 2, 0.6, 1500)
	if st := p.Status(); st.LastCycleOK || !st.LastGoodCycle.IsZero() || st.LastError == "" {
		var sts []string
		for _, rec := range r.sim.Stats().Requests {
			sts = append(sts, fmt.Sprintf("%s %d %d %s", rec.Path, rec.Status, rec.IDs, rec.At.Format("05.000")))
		}
		t.Fatalf("after failing cycles: %+v, want not OK, no good cycle, an error\n%s", st, strings.Join(sts, "\n"))
	}
	r.sim.ClearFaults()
	before := r.clk.Now()
	p = r.run(t, &countingSink{}, 1, 0.6, 1500)
	if st := p.Status(); !st.LastCycleOK || st.LastGoodCycle.Before(before) {
		t.Fatalf("after a good cycle: %+v, want LastGoodCycle at or after %v", st, before)
	}
}

// scriptedGraph resolves every UPN and answers each presence read with the next
// error the test sends (nil: a good reply), so the test can look at the status
// between two attempts.
type scriptedGraph struct {
	us      []users.User
	replies chan error
}

func (g *scriptedGraph) FindByUPN(_ context.Context, upns []string) (graph.Lookup, error) {
	out := map[string]graph.User{}
	for _, u := range upns {
		out[u] = graph.User{ID: "id-" + u, UPN: u}
	}
	return graph.Lookup{Found: out}, nil
}

func (g *scriptedGraph) FindByMail(_ context.Context, addrs []string) (graph.Lookup, error) {
	return graph.Lookup{Missing: addrs}, nil
}

func (g *scriptedGraph) LookupUPNs(_ context.Context, upns []string) (graph.Lookup, error) {
	return graph.Lookup{Missing: upns}, nil
}

func (g *scriptedGraph) GetPresences(ctx context.Context, ids []string) ([]graph.Presence, error) {
	select {
	case err := <-g.replies:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var out []graph.Presence
	for _, id := range ids {
		out = append(out, graph.Presence{ID: id, Availability: "Available", Activity: "Available"})
	}
	return out, nil
}

// Status shows each failed attempt as it happens: the latest error of an outage
// (refused, then timeouts) and a cycle that is not good, also while a 429 storm
// holds the cycle; not only when a chunk's retries are used up.
func TestStatusShowsTheLatestAttempt(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	g := &scriptedGraph{replies: make(chan error)}
	us := []users.User{{UPN: "a@x", Extension: "1"}}
	p, err := New(Options{Settings: filled(Settings{Interval: time.Second, RequestTimeout: 10 * time.Second}), Account: "a", Users: us, Graph: g, Store: db, Sink: &countingSink{}, Budget: budget.New(1500, 30*time.Second, 0.6, clk), Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	until := func(what string, cond func(Status) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(p.Status()); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("status never showed %s: %+v", what, p.Status())
			}
		}
	}
	g.replies <- nil
	until("a good cycle", func(s Status) bool { return s.LastCycleOK && s.Cycles == 1 })

	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	g.replies <- fmt.Errorf("POST /communications/getPresencesByUserId: %w", refused)
	until("the refused connection", func(s Status) bool { return !s.LastCycleOK && strings.Contains(s.LastError, "connection refused") })
	g.replies <- fmt.Errorf("POST /communications/getPresencesByUserId: %w", context.DeadlineExceeded)
	until("the timeout that followed", func(s Status) bool { return strings.Contains(s.LastError, "deadline exceeded") })
	for range 2 {
		g.replies <- &graph.ThrottledError{RetryAfter: 30 * time.Second, HasRetryAfter: true}
	}
	until("the throttling", func(s Status) bool { return !s.LastCycleOK && strings.Contains(s.LastError, "429") })
	g.replies <- nil // the next chunk is read (this one is given up after its tries)
	until("a good cycle again", func(s Status) bool { return s.LastCycleOK && s.LastError == "" })
}

// orderSink checks, when a change reaches it, that the state file does not hold
// the new state yet; fail makes its first Deliver fail.
type orderSink struct {
	db      *store.DB
	mu      sync.Mutex
	early   []string // users whose new state was kept before it was queued
	fail    bool
	changes []presence.Change
}

func (s *orderSink) Deliver(_ context.Context, cs []presence.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		s.fail = false
		return errors.New("outbox write failed")
	}
	for _, c := range cs {
		if kept, found, _ := Kept(s.db).Last(c.User.UPN); found && kept.SameAs(c.Current) {
			s.early = append(s.early, c.User.UPN)
		}
		s.changes = append(s.changes, c)
	}
	return nil
}

// A change is queued before its state is kept: a kill between the two (separate
// transactions) would otherwise lose it, since after the restart the kept state
// equals Graph's. A change the sink could not queue is seen again next cycle.
func TestChangesQueuedBeforeKept(t *testing.T) {
	for _, fail := range []bool{false, true} {
		r := newRig(t, 5, 1500)
		sink := &orderSink{db: r.db, fail: fail}
		r.run(t, sink, 2, 0.6, 1500)
		sink.mu.Lock()
		if len(sink.early) > 0 {
			t.Errorf("the state of %v was kept before it was queued", sink.early)
		}
		if len(sink.changes) != 5 {
			t.Errorf("first Deliver failed %v: %d first sightings queued, want 5", fail, len(sink.changes))
		}
		sink.mu.Unlock()
	}
}

// refusingGraph fails every $batch that asks for bad, until fixed; presence
// reads answer Available for every id.
type refusingGraph struct {
	scriptedGraph
	bad   string
	fixed atomic.Bool
	reads atomic.Int64 // ids read
}

func (g *refusingGraph) FindByUPN(ctx context.Context, upns []string) (graph.Lookup, error) {
	if !g.fixed.Load() && slices.Contains(upns, g.bad) {
		return graph.Lookup{}, &graph.StatusError{Status: 500, Code: "UnknownError", Message: "one lookup of the batch cannot be answered"}
	}
	return g.scriptedGraph.FindByUPN(ctx, upns)
}

func (g *refusingGraph) GetPresences(_ context.Context, ids []string) ([]graph.Presence, error) {
	g.reads.Add(int64(len(ids)))
	var out []graph.Presence
	for _, id := range ids {
		out = append(out, graph.Presence{ID: id, Availability: "Available", Activity: "Available"})
	}
	return out, nil
}

// A $batch of user lookups Graph keeps refusing does not keep every user from
// being polled: after a few tries its users are left for later (status counts
// them), the others are polled, and the lookup is tried again a minute on.
func TestRefusedLookupDoesNotStopPolling(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var us []users.User
	for i := range 325 {
		us = append(us, users.User{UPN: fmt.Sprintf("u%03d@x", i), Extension: "1"})
	}
	g := &refusingGraph{bad: "u003@x"}
	sink := &countingSink{}
	p, err := New(Options{Settings: filled(Settings{Interval: time.Second, RequestTimeout: 10 * time.Second, ResolveRate: 100}), Account: "a", Users: us, Graph: g, Store: db, Sink: sink, Budget: budget.New(1500, 30*time.Second, 0.6, clk), Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil := running(t, p)
	waitUntil("polled the 25 users of the good request", func() bool { return sink.count() == 25 && p.Status().Unresolved == 300 })
	g.fixed.Store(true)
	waitUntil("polled all 325 after the lookup was tried again", func() bool { return sink.count() == 325 && p.Status().Unresolved == 0 })
}

// running runs p until the test ends, and returns a wait for cond (at most
// 10 s; the test fails naming what never came).
func running(t *testing.T, p *Poller) func(what string, cond func() bool) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never %s: %+v", what, p.Status())
			}
		}
	}
}
