package write

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
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

var t0 = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

const app = graphsim.DefaultDaemonApp

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

// ids resolves users the way the poller's kept ids do, from the tenant.
type ids map[string]string

func (m ids) ID(upn string) (string, bool, error) { id, ok := m[upn]; return id, ok, nil }

type rig struct {
	sim  *graphsim.Server
	clk  *clock.Fake
	db   *store.DB
	ids  ids
	gc   *graph.Client
	logs *testkit.Buffer
	bud  *budget.Budget
}

func newRig(t *testing.T) *rig {
	t.Helper()
	clk := clock.NewFake(t0)
	sim := testkit.StartSim(t, graphsim.Options{Users: 3, Clock: clk})
	tok, err := sim.AppToken(app)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rig{sim: sim, clk: clk, db: db, ids: ids{}, gc: graph.New(sim.GraphURL(), sim.Client(), staticToken(tok)), logs: &testkit.Buffer{},
		bud: budget.New(1500, 30*time.Second, 0.5, clk)}
	for _, u := range sim.Users() {
		r.ids[u.UPN] = u.ID
		if _, err := sim.SetPresence(u.UPN, "Available", "Available"); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *rig) writer(t *testing.T) *Writer {
	t.Helper()
	w, err := New(Options{Settings: DefaultSettings(), Account: "main", AppID: app, Graph: r.gc, IDs: r.ids, Budget: r.bud,
		Sessions: BoltSessions{r.db}, Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (r *rig) shows(t *testing.T, upn string) string {
	t.Helper()
	a, act, ok := r.sim.Presence(upn)
	if !ok {
		t.Fatalf("no presence for %s", upn)
	}
	return a + "/" + act
}

func change(u users.User, line presence.Line, at time.Time) presence.PBXChange {
	return presence.PBXChange{User: u, Current: presence.PBXState{UPN: u.UPN, Line: line, Changed: at}}
}

func (r *rig) user(i int) users.User {
	u := r.sim.Users()[i]
	return users.User{UPN: u.UPN, Account: "main"}
}

// A call shows Busy/InACall with the app's session; its end clears the
// session and the user's own state shows again. The session is kept in the
// state file while it lasts.
func TestCallShownAndCleared(t *testing.T) {
	r := newRig(t)
	w := r.writer(t)
	ctx := context.Background()
	u := r.user(0)
	w.Apply([]presence.PBXChange{change(u, presence.LineInCall, t0)})
	w.drain(ctx)
	if got := r.shows(t, u.UPN); got != "Busy/InACall" {
		t.Fatalf("in a call Teams shows %s", got)
	}
	ws := r.sim.Writes()
	if len(ws) != 1 || ws[0].SessionID != app || ws[0].Expiration != 5*time.Minute || !ws[0].Accepted() {
		t.Fatalf("writes %+v", ws)
	}
	if kept, _ := (BoltSessions{r.db}).LoadSessions(); kept[u.UPN].Pair != (Pair{presence.Busy, presence.ActInACall}) {
		t.Errorf("kept sessions %+v", kept)
	}
	w.Apply([]presence.PBXChange{change(u, presence.LineIdle, t0)})
	w.drain(ctx)
	if got := r.shows(t, u.UPN); got != "Available/Available" {
		t.Fatalf("after the call Teams shows %s; want the user's own Available/Available", got)
	}
	if kept, _ := (BoltSessions{r.db}).LoadSessions(); len(kept) != 0 {
		t.Errorf("a cleared session is still kept: %+v", kept)
	}
	st := w.Status(true)
	if st.Counts.Set != 1 || st.Counts.Cleared != 1 || st.Held != 0 || st.Latency.Samples != 1 {
		t.Errorf("status %+v", st)
	}
}

// A call longer than the expiration stays in Teams: the session is renewed at
// 80% of it; after the call, nothing is renewed and it is cleared.
func TestLongCallIsRenewed(t *testing.T) {
	r := newRig(t)
	w := r.writer(t)
	ctx := context.Background()
	u := r.user(1)
	w.Apply([]presence.PBXChange{change(u, presence.LineInCall, t0)})
	w.drain(ctx)
	for i := 0; i < 12; i++ { // 48 minutes, in 4-minute steps
		r.clk.Sleep(ctx, 4*time.Minute)
		if got := r.shows(t, u.UPN); got != "Busy/InACall" {
			t.Fatalf("after %d minutes of a call Teams shows %s", (i+1)*4, got)
		}
		w.drain(ctx)
	}
	if st := w.Status(false); st.Counts.Renewed != 12 || st.Counts.Set != 1 {
		t.Errorf("counts %+v; want 12 renewals of one session", st.Counts)
	}
	// Without renewals (presencebridge stopped) the session lapses within one
	// expiration.
	r.clk.Sleep(ctx, 5*time.Minute+time.Second)
	if got := r.shows(t, u.UPN); got != "Available/Available" {
		t.Errorf("a session left unrenewed still shows %s", got)
	}
}

// A call that starts and ends before its write is sent writes nothing.
func TestShortCallWritesNothing(t *testing.T) {
	r := newRig(t)
	w := r.writer(t)
	u := r.user(0)
	w.Apply([]presence.PBXChange{change(u, presence.LineInCall, t0)})
	w.Apply([]presence.PBXChange{change(u, presence.LineIdle, t0)})
	w.drain(context.Background())
	if ws := r.sim.Writes(); len(ws) != 0 {
		t.Fatalf("writes %+v; want none", ws)
	}
}

// A 429 pauses the account's budget for its Retry-After, and the write (here
// the clear at the end of a call) still arrives after it.
func TestThrottledWriteArrives(t *testing.T) {
	r := newRig(t)
	w := r.writer(t)
	ctx := context.Background()
	u := r.user(2)
	w.Apply([]presence.PBXChange{change(u, presence.LineInCall, t0)})
	w.drain(ctx)
	r.sim.InjectFault(graphsim.Fault{Path: "/clearPresence", Status: 429, RetryAfter: "7", Count: 1})
	w.Apply([]presence.PBXChange{change(u, presence.LineIdle, t0)})
	next := w.drain(ctx)
	if got := r.shows(t, u.UPN); got != "Busy/InACall" {
		t.Fatalf("after the 429 Teams shows %s", got)
	}
	if want := r.clk.Now().Add(7 * time.Second); !next.Equal(want) {
		t.Errorf("next write due %v; want Retry-After's %v", next, want)
	}
	r.clk.Sleep(ctx, 7*time.Second)
	w.drain(ctx)
	if got := r.shows(t, u.UPN); got != "Available/Available" {
		t.Fatalf("after the pause Teams shows %s; the clear never arrived", got)
	}
	st := w.Status(false)
	if st.Counts.Throttled != 1 || st.Counts.Cleared != 1 || st.Counts.Failed != 0 {
		t.Errorf("counts %+v", st.Counts)
	}
	ws := r.sim.Writes()
	if last := ws[len(ws)-1]; !last.Accepted() || last.At.Before(t0.Add(7*time.Second)) {
		t.Errorf("the clear was accepted at %v, before the Retry-After ran out", last.At)
	}
}

// A restart mid-call: the kept session is left alone until the PBX says how
// the user is; a call that ended while presencebridge was down is cleared.
func TestRestartReconciles(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	ended, still := r.user(0), r.user(1)
	w := r.writer(t)
	w.Apply([]presence.PBXChange{change(ended, presence.LineInCall, t0), change(still, presence.LineInCall, t0)})
	w.drain(ctx)
	// Down for two minutes; ended's call ends meanwhile.
	r.clk.Sleep(ctx, 2*time.Minute)
	w2 := r.writer(t)
	if n := w2.Held(); n != 2 {
		t.Fatalf("after the restart %d sessions are known; want 2", n)
	}
	w2.drain(ctx)
	if n := len(r.sim.Writes()); n != 2 {
		t.Fatalf("before the PBX said anything the restarted writer wrote %d times", n-2)
	}
	w2.Apply([]presence.PBXChange{change(ended, presence.LineIdle, r.clk.Now()), change(still, presence.LineInCall, r.clk.Now())})
	w2.drain(ctx)
	if got := r.shows(t, ended.UPN); got != "Available/Available" {
		t.Errorf("the call that ended while down still shows %s", got)
	}
	if got := r.shows(t, still.UPN); got != "Busy/InACall" {
		t.Errorf("the call still going shows %s", got)
	}
	if st := w2.Status(false); st.Counts.Cleared != 1 || st.Counts.Set != 0 || st.Held != 1 {
		t.Errorf("counts %+v, held %d; want one clear and the other session kept as it is", st.Counts, st.Held)
	}
}

// Without the application permission, writes fail with the fix, logged once.
func TestPermissionRefused(t *testing.T) {
	r := newRig(t)
	if err := r.sim.SetAppRole(app, "Presence.ReadWrite.All", false); err != nil {
		t.Fatal(err)
	}
	tok, err := r.sim.AppToken(app)
	if err != nil {
		t.Fatal(err)
	}
	r.gc = graph.New(r.sim.GraphURL(), r.sim.Client(), staticToken(tok))
	w := r.writer(t)
	ctx := context.Background()
	w.Apply([]presence.PBXChange{change(r.user(0), presence.LineInCall, t0), change(r.user(1), presence.LineInCall, t0)})
	w.drain(ctx)
	st := w.Status(false)
	if st.Counts.Failed < 1 || st.Counts.Failed > 2 || !strings.Contains(st.LastError, "Presence.ReadWrite.All") {
		t.Errorf("status %+v; want the writes under way to fail naming the permission", st)
	}
	failed := st.Counts.Failed
	r.clk.Sleep(ctx, 5*time.Minute) // within the pause after a refusal: nothing is tried
	w.drain(ctx)
	if st := w.Status(false); st.Counts.Failed != failed {
		t.Errorf("%d more writes tried within the pause after the refusal", st.Counts.Failed-failed)
	}
	r.clk.Sleep(ctx, 6*time.Minute)
	w.drain(ctx)
	if n := r.logs.Count("Graph refuses to let presencebridge show PBX calls"); n != 1 {
		t.Errorf("the refusal was logged %d times; want once:\n%s", n, r.logs)
	}
}

// concurrency counts the writes under way at once.
type concurrency struct {
	Graph
	mu        sync.Mutex
	now, most int
}

func (c *concurrency) SetPresence(ctx context.Context, id string, p graph.SetPresence) error {
	c.mu.Lock()
	c.now++
	c.most = max(c.most, c.now)
	c.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // Graph's round trip, so that writes overlap
	defer func() { c.mu.Lock(); c.now--; c.mu.Unlock() }()
	return c.Graph.SetPresence(ctx, id, p)
}

// A burst of calls is written several at a time (Graph's round trip would pace
// one at a time), never more than inFlight.
func TestWritesOverlap(t *testing.T) {
	r := newRig(t)
	conc := &concurrency{Graph: r.gc}
	w, err := New(Options{Settings: DefaultSettings(), Account: "main", AppID: app, Graph: conc, IDs: r.ids, Budget: r.bud, Clock: r.clk})
	if err != nil {
		t.Fatal(err)
	}
	var chs []presence.PBXChange
	for i := range r.sim.Users() {
		chs = append(chs, change(r.user(i), presence.LineInCall, t0))
	}
	w.Apply(chs)
	w.drain(context.Background())
	if conc.most < 2 || conc.most > inFlight {
		t.Errorf("%d writes under way at most; want 2 to %d", conc.most, inFlight)
	}
	if st := w.Status(false); st.Counts.Set != len(chs) {
		t.Errorf("%d of %d calls written", st.Counts.Set, len(chs))
	}
}

// A call applied while another user's write is under way starts its own write
// then, not after that one ends.
func TestApplyDuringAWrite(t *testing.T) {
	r := newRig(t)
	conc := &concurrency{Graph: r.gc}
	w, err := New(Options{Settings: DefaultSettings(), Account: "main", AppID: app, Graph: conc, IDs: r.ids, Budget: r.bud, Clock: r.clk})
	if err != nil {
		t.Fatal(err)
	}
	w.Apply([]presence.PBXChange{change(r.user(0), presence.LineInCall, t0)})
	done := make(chan struct{})
	go func() { defer close(done); w.drain(context.Background()) }()
	for { // the first write is under way (it takes 50 ms)
		conc.mu.Lock()
		n := conc.now
		conc.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	w.Apply([]presence.PBXChange{change(r.user(1), presence.LineInCall, t0)})
	<-done
	if conc.most != 2 {
		t.Errorf("%d writes under way at most; the second call waited for the first write", conc.most)
	}
}
