package compose

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

type queue struct {
	mu    sync.Mutex
	items []delivery.Item
}

func (q *queue) Enqueue(_ context.Context, items []delivery.Item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, items...)
	return nil
}

func (q *queue) take() []delivery.Item {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

type states map[string]presence.State

func (s states) Last(upn string) (presence.State, bool, error) { st, ok := s[upn]; return st, ok, nil }

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func newComposer(t *testing.T, path string, kept states, clk clock.Clock) (*Composer, *queue) {
	t.Helper()
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	q := &queue{}
	c, err := New(Options{Mapping: presence.DefaultMapping(), Queue: q, States: kept, Store: db, Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return c, q
}

func state(upn string, a presence.Availability, act presence.Activity) presence.State {
	return presence.State{UPN: upn, Availability: a, Activity: act, Changed: t0}
}

// A change is shown through the mapping table and queued as of when it was seen.
func TestDeliverMapsChanges(t *testing.T) {
	c, q := newComposer(t, filepath.Join(t.TempDir(), "s.db"), states{}, clock.NewFake(t0.Add(time.Hour)))
	u := users.User{UPN: "a@x", SIPURI: "sip:1@pbx"}
	if err := c.Deliver(context.Background(), []presence.Change{{User: u, Current: state("a@x", presence.Busy, presence.ActInACall)}}); err != nil {
		t.Fatal(err)
	}
	got := q.take()
	if len(got) != 1 || got[0].Mapped.Note != "In a call" || got[0].Reason != delivery.ReasonChange || !got[0].Queued.Equal(t0) || got[0].User != u {
		t.Fatalf("queued %+v", got)
	}
}

// An account that does not read Teams for StaleAfter has its users shown as the
// Stale rule; the episode outlives a restart, and the first good read after it
// sends the live states again. Sync shows a stale account's users stale too.
func TestStalePolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	kept := states{"a@x": state("a@x", presence.Available, presence.ActAvailable)}
	clk := clock.NewFake(t0)
	c, q := newComposer(t, path, kept, clk)
	g := Group{Account: "main", Users: []users.User{{UPN: "a@x"}, {UPN: "b@x"}}}
	var lastGood time.Time
	w := []Watched{{Group: g, Reading: func() (time.Time, string) { return lastGood, "Graph 503" }}}

	clk.Advance(4 * time.Minute)
	c.checkStale(context.Background(), 5*time.Minute, t0, w)
	if got := q.take(); len(got) != 0 {
		t.Fatalf("before StaleAfter: %+v", got)
	}
	clk.Advance(2 * time.Minute)
	c.checkStale(context.Background(), 5*time.Minute, t0, w)
	got := q.take()
	if len(got) != 2 || got[0].Reason != delivery.ReasonStale || got[0].Mapped != presence.DefaultMapping().Stale() {
		t.Fatalf("after StaleAfter: %+v; want both users shown stale", got)
	}
	since := c.StaleSince("main")
	if since.IsZero() {
		t.Fatal("no stale episode")
	}
	rep, err := c.Sync(context.Background(), []Group{g})
	if got := q.take(); err != nil || rep.Queued != 1 || rep.NoState != 1 || got[0].Mapped != presence.DefaultMapping().Stale() {
		t.Fatalf("Sync while stale: %+v, %+v, %v", rep, got, err)
	}

	// A restart during the outage remembers it.
	c.o.Store.Close()
	c, q = newComposer(t, path, kept, clk)
	if !c.StaleSince("main").Equal(since) {
		t.Fatalf("after a restart the stale episode is %v, want %v", c.StaleSince("main"), since)
	}
	lastGood = clk.Now().Add(time.Second)
	clk.Advance(time.Minute)
	c.checkStale(context.Background(), 5*time.Minute, t0, w)
	got = q.take()
	if len(got) != 1 || got[0].User.UPN != "a@x" || got[0].Reason != delivery.ReasonSync || got[0].Mapped.Note != "Available" || !c.StaleSince("main").IsZero() {
		t.Fatalf("after a good read: %+v; want a@x's live state again (b@x has none)", got)
	}
}
