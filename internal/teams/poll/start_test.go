package poll

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

const batchPath = "/v1.0/$batch"

// startRig is newSimRig's with extra lines in the users file and a log.
type startRig struct {
	*rig
	logs *testkit.Buffer
}

func newStartRig(t *testing.T, o graphsim.Options, extra ...string) *startRig {
	t.Helper()
	r := newSimRig(t, o)
	for i, upn := range extra {
		r.us = append(r.us, users.User{UPN: upn, Extension: "2", Line: o.Users + i + 2})
	}
	return &startRig{rig: r, logs: &testkit.Buffer{}}
}

// start runs a poller with s until until(status) holds, and returns it stopped.
func (r *startRig) start(t *testing.T, s Settings, limit int, sink Sink, until func(Status) bool) *Poller {
	t.Helper()
	p, err := New(Options{Settings: filled(s), Account: "a", Users: r.us, Graph: r.gc, Store: r.db, Sink: sink,
		Budget: budget.New(limit, 30*time.Second, 0.6, r.clk), Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); !until(p.Status()); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the poller never got there: %+v\n%s", p.Status(), r.logs)
		}
	}
	return p
}

func cycles(n int) func(Status) bool { return func(s Status) bool { return s.Cycles >= n } }

// records are the tenant's request records for path.
func (r *startRig) records(path string) []graphsim.RequestRecord {
	var out []graphsim.RequestRecord
	for _, rec := range r.sim.Stats().Requests {
		if rec.Path == path {
			out = append(out, rec)
		}
	}
	return out
}

// Interval auto is the fastest cycle the budget allows for the users, never
// faster than MinInterval; a fixed Interval is kept unless the budget needs a
// slower cycle.
func TestAutoInterval(t *testing.T) {
	for _, tc := range []struct {
		name     string
		users    int
		limit    int
		settings Settings
		want     time.Duration
	}{
		{"few users: the floor", 30, 1500, Settings{MinInterval: 2 * time.Second}, 2 * time.Second},
		{"a lower floor", 30, 1500, Settings{MinInterval: 500 * time.Millisecond}, 500 * time.Millisecond},
		// 1,301 users are 3 requests; 60% of 20 per 30 s is 0.4 a second: 7.5 s.
		{"the budget's pace", 1301, 20, Settings{MinInterval: 2 * time.Second}, 7500 * time.Millisecond},
		{"fixed", 30, 1500, Settings{Interval: 3 * time.Second, MinInterval: 2 * time.Second}, 3 * time.Second},
		{"fixed, slower budget", 1301, 20, Settings{Interval: 3 * time.Second, MinInterval: 2 * time.Second}, 7500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStartRig(t, graphsim.Options{Users: tc.users, ThrottleLimit: tc.limit})
			p := r.start(t, tc.settings, tc.limit, &countingSink{}, cycles(3))
			if got := p.Status().CycleInterval; got != tc.want {
				t.Fatalf("cycle interval %s, want %s", got, tc.want)
			}
			if !strings.Contains(r.logs.String(), "cycle every "+tc.want.String()) {
				t.Errorf("the log does not say the cycle:\n%s", r.logs)
			}
		})
	}
}

// Users are resolved 300 a request (15 UPNs a filter, 20 filters a $batch,
// which the simulated tenant enforces with Microsoft's errors); what the UPN
// filter does not find is looked up by mail (a guest, a user whose UPN is not
// the address the PBX knows), then one by one; what nothing finds is unknown.
// The guest is on two lines (by address and by its #EXT# UPN): both are shown
// its presence.
func TestBatchedResolveWithFallbacks(t *testing.T) {
	r := newStartRig(t, graphsim.Options{Users: 700, ExtraUsers: []graphsim.User{
		{UPN: "ann_fabrikam.example#EXT#@contoso.example", Mail: "ann@fabrikam.example", DisplayName: "Ann (guest)"},
		{UPN: "j.smith@contoso.example", Mail: "john.smith@contoso.example", DisplayName: "John Smith"},
	}}, "ann@fabrikam.example", "john.smith@contoso.example", "ann_fabrikam.example#ext#@contoso.example", "ghost@contoso.example")
	sink := &countingSink{}
	p := r.start(t, Settings{ResolveRate: 100}, 1500, sink, func(s Status) bool { return !s.Resolving && sink.count() >= 703 })
	st := p.Status()
	if st.Resolved != 703 || len(st.Unknown) != 1 || st.Unknown[0] != "ghost@contoso.example" {
		t.Fatalf("resolved %d, unknown %v; want 703 and the ghost", st.Resolved, st.Unknown)
	}
	if sink.count() != 703 {
		t.Fatalf("%d users' first states passed on, want 703", sink.count())
	}
	// 704 UPNs: 3 filter requests (300, 300, 104), one by mail for the 3 the
	// UPN filter missed (the guest's #EXT# UPN is found by it), one lookup of
	// the ghost's UPN.
	batches := r.records(batchPath)
	if len(batches) != 5 {
		t.Errorf("%d lookup requests, want 5: %+v", len(batches), batches)
	}
	for _, b := range batches {
		if b.Status != 200 || b.IDs > graph.MaxBatch {
			t.Errorf("lookup request %+v", b)
		}
	}
	out := r.logs.String()
	if n := strings.Count(out, "Teams user not found"); n != 1 || !strings.Contains(out, "ghost@contoso.example") {
		t.Errorf("the unknown UPN was logged %d times:\n%s", n, out)
	}
	if !strings.Contains(out, "Two lines of the users file are one Teams user") {
		t.Errorf("the guest on two lines (its address, its #EXT# UPN) is not named:\n%s", out)
	}
	if !strings.Contains(out, "Resolved 703 of 704 users") || !strings.Contains(out, "(2 by their mail address)") || !strings.Contains(out, "1 not found in Teams") {
		t.Errorf("the resolve is not summed up:\n%s", out)
	}

	// A restart takes the ids from the state file: only the unknown UPN is
	// looked up again (it may have been created since), one step each.
	r.sim.ResetStats()
	r.start(t, Settings{ResolveRate: 100}, 1500, &countingSink{}, func(s Status) bool { return s.Cycles >= 1 && !s.Resolving })
	if recs := r.records(batchPath); len(recs) != 3 || recs[0].IDs != 1 || recs[1].IDs != 1 || recs[2].IDs != 1 {
		t.Errorf("a restart sent these lookups: %+v", recs)
	}
}

// The directory's own throttling is obeyed, per item of a $batch and for the
// $batch itself: lookups wait out Retry-After (a client that did not would ask
// hundreds of times while the tenant's 10 s windows pass), and every user is
// resolved in the end.
func TestDirectoryThrottleObeyed(t *testing.T) {
	for _, whole := range []bool{false, true} {
		t.Run(map[bool]string{false: "items", true: "whole batch"}[whole], func(t *testing.T) {
			// 1,500 users are 100 filters of 1 RU in 5 requests; 30 RU per
			// 10 s lets 30 through a window.
			r := newStartRig(t, graphsim.Options{Users: 1500, DirectoryLimit: 30, DirectoryWholeBatch: whole})
			t0 := r.clk.Now()
			p := r.start(t, Settings{ResolveRate: 100}, 1500, &countingSink{}, func(s Status) bool { return !s.Resolving && s.Resolved == 1500 })
			st := r.sim.Stats()
			if st.DirectoryThrottled == 0 {
				t.Fatal("the tenant never throttled a lookup; the test proves nothing")
			}
			batches := r.records(batchPath)
			if len(batches) > 40 {
				t.Errorf("%d lookup requests (%d throttled): Retry-After was not waited out", len(batches), st.DirectoryThrottled)
			}
			if took := batches[len(batches)-1].At.Sub(t0); took < 20*time.Second {
				t.Errorf("the last lookup came %s after the start; 100 filters at 30 a 10 s window take 30 s", took)
			}
			if st := p.Status(); st.Unresolved != 0 || len(st.Unknown) != 0 {
				t.Errorf("status %+v", st)
			}
		})
	}
}

// Polling starts with the first lookup's answer: the first presence is read
// long before the last user is resolved, and status says how far resolving is.
func TestProgressiveStart(t *testing.T) {
	r := newStartRig(t, graphsim.Options{Users: 3000})
	var during Status
	p := r.start(t, Settings{ResolveRate: 1}, 1500, &countingSink{}, func(s Status) bool {
		if s.Resolving && s.Resolved > 0 && during.Resolved == 0 {
			during = s
		}
		return !s.Resolving && s.Resolved == 3000 && s.Cycles > 0
	})
	batches, reads := r.records(batchPath), r.records(presencePath)
	if len(batches) != 10 {
		t.Fatalf("%d lookup requests for 3,000 users, want 10", len(batches))
	}
	if !reads[0].At.Before(batches[len(batches)-1].At) {
		t.Fatalf("the first presence read came at %s, after the last lookup at %s", reads[0].At, batches[len(batches)-1].At)
	}
	if during.Resolved == 0 || during.Resolved >= 3000 || during.Users != 3000 {
		t.Errorf("status while resolving: %+v", during)
	}
	if got := p.Status(); got.Resolved != 3000 {
		t.Errorf("status after: %+v", got)
	}
}

// A reply with an older sequenceNumber than one already read (a lagging
// replica) does not take a user back to the older state.
func TestOlderReplyNotTaken(t *testing.T) {
	r := newStartRig(t, graphsim.Options{Users: 30})
	sink := &countingSink{}
	p, err := New(Options{Settings: filled(Settings{}), Account: "a", Users: r.us, Graph: r.gc, Store: r.db, Sink: sink,
		Budget: budget.New(1500, 30*time.Second, 0.6, r.clk), Clock: r.clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	wait := running(t, p)
	wait("read every user", func() bool { return sink.count() == 30 })
	upn := r.us[4].UPN
	if _, err := r.sim.SetPresence(upn, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	wait("saw the change", func() bool { return sink.count() == 31 })
	if _, err := r.sim.ServeStale(upn); err != nil {
		t.Fatal(err)
	}
	wait("was answered the older state", func() bool { return p.Status().OutOfOrder == 1 })
	c := p.Status().Cycles
	wait("read again", func() bool { return p.Status().Cycles > c+1 })
	if sink.count() != 31 {
		sink.mu.Lock()
		t.Fatalf("the older reply was taken: %+v", sink.changes[31:])
	}
}
