package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// fakeTarget accepts items in memory. failNext makes the next n Sends fail with
// ErrTargetDown; refuse makes a user's items permanently refused; gate, when set,
// holds each Send until the test lets it go.
type fakeTarget struct {
	mu       sync.Mutex
	name     string
	failNext int
	refuse   map[string]bool
	accepted map[string][]Item // UPN -> accepted items in order
	calls    int
	inFlight map[string]bool
	overlap  []string // users seen in two concurrent Sends (must stay empty)
	gate     chan struct{}
	started  chan []Item
	delay    time.Duration   // each Send takes up to this long (a slow PBX)
	broken   map[string]bool // users whose items always fail with ErrTargetDown (a CTI that 500s on one document)
}

func newFake(name string) *fakeTarget {
	return &fakeTarget{name: name, refuse: map[string]bool{}, accepted: map[string][]Item{}, inFlight: map[string]bool{}}
}

func (f *fakeTarget) Name() string { return f.name }
func (f *fakeTarget) Close() error { return nil }

func (f *fakeTarget) Send(ctx context.Context, items []Item) []error {
	f.mu.Lock()
	f.calls++
	for _, it := range items {
		if f.inFlight[it.User.UPN] {
			f.overlap = append(f.overlap, it.User.UPN)
		}
		f.inFlight[it.User.UPN] = true
	}
	gate, started := f.gate, f.started
	f.mu.Unlock()
	if started != nil {
		started <- items
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	if f.delay > 0 {
		time.Sleep(rand.N(f.delay))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(items))
	down := f.failNext > 0
	if down {
		f.failNext--
	}
	for i, it := range items {
		delete(f.inFlight, it.User.UPN)
		switch {
		case down:
			errs[i] = fmt.Errorf("dial 127.0.0.1:9: %w", ErrTargetDown)
		case f.broken[it.User.UPN]:
			errs[i] = fmt.Errorf("POST https://cti.example/presence: 500 Internal Server Error: %w", ErrTargetDown)
		case f.refuse[it.User.UPN]:
			errs[i] = Permanent("404 Not Found for %s", it.User.SIPURI)
		default:
			f.accepted[it.User.UPN] = append(f.accepted[it.User.UPN], it)
		}
	}
	return errs
}

func (f *fakeTarget) got(upn string) []Item {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Item(nil), f.accepted[upn]...)
}

type rig struct {
	path string
	db   *store.DB
	clk  *clock.Fake
	logs *testkit.Buffer
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{path: filepath.Join(t.TempDir(), "state.db"), clk: clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)), logs: &testkit.Buffer{}}
	r.open(t)
	return r
}

func (r *rig) open(t *testing.T) {
	t.Helper()
	db, err := store.Open(r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.db = db
	t.Cleanup(func() { db.Close() })
}

// filled gives s the batch size and retry bounds it leaves out; re-assertion and
// probes stay off unless s sets them.
func filled(s Settings) Settings {
	d := DefaultSettings()
	if s.BatchSize == 0 {
		s.BatchSize = d.BatchSize
	}
	if s.RetryMin == 0 {
		s.RetryMin = d.RetryMin
	}
	if s.RetryMax == 0 {
		s.RetryMax = max(d.RetryMax, s.RetryMin)
	}
	return s
}

func (r *rig) dispatcher(targets ...Target) *Dispatcher {
	return NewDispatcher(Options{Settings: filled(Settings{RetryMin: time.Second, RetryMax: 8 * time.Second, BatchSize: 50}), Outbox: BoltOutbox(r.db), Targets: targets, Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
}

// start runs d until the test ends (or stop is called).
func start(t *testing.T, d *Dispatcher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func item(upn string, a presence.Availability, act presence.Activity) Item {
	s := presence.State{UPN: upn, Availability: a, Activity: act}
	return Item{User: users.User{UPN: upn, SIPURI: "sip:" + strings.Split(upn, "@")[0] + "@pbx.example"}, State: s,
		Mapped: presence.DefaultMapping().Map(s), Reason: ReasonChange}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var states = []struct {
	a   presence.Availability
	act presence.Activity
}{
	{presence.Available, presence.ActAvailable}, {presence.Busy, presence.ActInACall},
	{presence.Away, presence.ActAway}, {presence.DoNotDisturb, presence.ActPresenting},
	{presence.Offline, presence.ActOffWork},
}

// While the target is down, three states of one user coalesce: only the newest is sent.
func TestCoalescesWhileTargetDown(t *testing.T) {
	r := newRig(t)
	f := newFake("sip")
	f.failNext = 1
	d := r.dispatcher(f)
	if err := d.Enqueue(context.Background(), []Item{item("a@x", presence.Available, presence.ActAvailable)}); err != nil {
		t.Fatal(err)
	}
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Busy, presence.ActInACall)})
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Away, presence.ActAway)})
	if n := d.Pending("sip"); n != 1 {
		t.Fatalf("pending = %d, want 1 (coalesced)", n)
	}
	start(t, d)
	waitUntil(t, "delivery", func() bool { return d.Pending("sip") == 0 })
	got := f.got("a@x")
	if len(got) != 1 || got[0].State.Activity != presence.ActAway || got[0].Seq != 3 {
		t.Fatalf("accepted %+v, want only the newest (Away, seq 3)", got)
	}
	if dl := d.Delivered("a@x"); len(dl) != 1 || dl[0].Mapped.State != "away" || dl[0].Seq != 3 {
		t.Errorf("Delivered = %+v", dl)
	}
}

// The target goes down and comes back while states keep changing: every user's
// final state arrives, and no user ever gets an older state after a newer one.
func TestDownThenUpDeliversFinalStatesInOrder(t *testing.T) {
	r := newRig(t)
	f := newFake("http")
	d := r.dispatcher(f)
	start(t, d)
	const nUsers = 120
	final := map[string]Item{}
	for round := range 5 {
		f.mu.Lock()
		f.failNext = round % 2 * 3 // down for a few sends every other round
		f.mu.Unlock()
		var batch []Item
		for u := range nUsers {
			s := states[(u+round)%len(states)]
			it := item(fmt.Sprintf("u%03d@x", u), s.a, s.act)
			batch = append(batch, it)
			final[it.User.UPN] = it
		}
		if err := d.Enqueue(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitUntil(t, "the outbox to drain", func() bool { return d.Pending("http") == 0 })
	for upn, want := range final {
		got := f.got(upn)
		if len(got) == 0 {
			t.Fatalf("%s: nothing delivered", upn)
		}
		if last := got[len(got)-1]; last.State.Activity != want.State.Activity {
			t.Errorf("%s: final delivered %s, want %s", upn, last.State.Activity, want.State.Activity)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Seq <= got[i-1].Seq {
				t.Errorf("%s: seq %d delivered after seq %d", upn, got[i].Seq, got[i-1].Seq)
			}
		}
	}
	f.mu.Lock()
	overlap := f.overlap
	f.mu.Unlock()
	if len(overlap) > 0 {
		t.Errorf("users in two Sends at once: %v", overlap)
	}
	if r.logs.Count("Delivery target down") != r.logs.Count("Delivery target back") {
		t.Errorf("down/back not logged in pairs:\n%s", r.logs.String())
	}
}

// States queued before a stop are sent after a restart.
func TestPendingSurvivesRestart(t *testing.T) {
	r := newRig(t)
	d := r.dispatcher(newFake("sip"))
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Busy, presence.ActInACall), item("b@x", presence.Away, presence.ActAway)})
	r.db.Close()

	r.open(t)
	f := newFake("sip")
	d = r.dispatcher(f)
	if n := d.Pending("sip"); n != 2 {
		t.Fatalf("pending after restart = %d, want 2", n)
	}
	start(t, d)
	waitUntil(t, "delivery", func() bool { return d.Pending("sip") == 0 })
	if len(f.got("a@x")) != 1 || len(f.got("b@x")) != 1 {
		t.Fatalf("after restart got a=%v b=%v", f.got("a@x"), f.got("b@x"))
	}
}

// A permanent refusal is logged once and dropped; the other users go through.
func TestPermanentRefusalDroppedAndLoggedOnce(t *testing.T) {
	r := newRig(t)
	f := newFake("sip")
	f.refuse["bad@x"] = true
	d := r.dispatcher(f)
	start(t, d)
	d.Enqueue(context.Background(), []Item{item("bad@x", presence.Busy, presence.ActInACall), item("ok@x", presence.Busy, presence.ActInACall)})
	waitUntil(t, "both users to settle", func() bool { st := d.Status()[0]; return st.Pending == 0 && st.Sent+st.Dropped == 2 })
	if n := r.logs.Count("refused a state for good"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, r.logs.String())
	}
	if !strings.Contains(r.logs.String(), "bad@x") || len(f.got("ok@x")) != 1 {
		t.Errorf("log should name the user; ok@x got %v", f.got("ok@x"))
	}
	if st := d.Status()[0]; st.Dropped != 1 || st.Sent != 1 || st.Down {
		t.Errorf("status = %+v", st)
	}
}

// A newer state queued while an older one is in flight waits for it, and the
// older one's acceptance does not remove the newer one from the outbox.
func TestNewerStateWaitsForInFlight(t *testing.T) {
	r := newRig(t)
	f := newFake("sip")
	f.gate, f.started = make(chan struct{}), make(chan []Item, 4)
	d := r.dispatcher(f)
	start(t, d)
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Busy, presence.ActInACall)})
	var first []Item
	select {
	case first = <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent")
	}
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Available, presence.ActAvailable)})
	select {
	case items := <-f.started:
		t.Fatalf("a second Send began while the first was in flight: %+v", items)
	case <-time.After(50 * time.Millisecond):
	}
	f.gate <- struct{}{} // first Send completes
	var second []Item
	select {
	case second = <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the newer state was never sent: the older one's acceptance removed it")
	}
	f.gate <- struct{}{}
	waitUntil(t, "the outbox to drain", func() bool { return d.Pending("sip") == 0 })
	if first[0].Seq != 1 || second[0].Seq != 2 || second[0].State.Activity != presence.ActAvailable {
		t.Fatalf("sent %+v then %+v, want seq 1 then the newer seq 2", first, second)
	}
	if got := f.got("a@x"); len(got) != 2 || got[1].Seq != 2 {
		t.Fatalf("accepted %+v", got)
	}
}

// Every target keeps its own outbox: one target down does not hold the other back.
func TestTargetsAreIndependent(t *testing.T) {
	r := newRig(t)
	up, down := newFake("http"), newFake("sip")
	down.failNext = 1 << 30
	d := r.dispatcher(up, down)
	start(t, d)
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Busy, presence.ActInACall)})
	waitUntil(t, "http delivery", func() bool { return d.Pending("http") == 0 })
	if d.Pending("sip") != 1 {
		t.Errorf("sip pending = %d, want 1 while it is down", d.Pending("sip"))
	}
	var sip TargetStatus
	waitUntil(t, "sip to be marked down", func() bool {
		for _, st := range d.Status() {
			if st.Name == "sip" {
				sip = st
			}
		}
		return sip.Down
	})
	if !sip.Down || sip.LastError == "" || !errors.Is(fmt.Errorf("%s: %w", sip.LastError, ErrTargetDown), ErrTargetDown) {
		t.Errorf("sip status = %+v, want down with an error", sip)
	}
}

// Several pollers deliver changes at once to a slow target: no user is ever in two
// Sends at once, each user's accepted states only move forward, and the last
// state of every user arrives.
func TestOneInFlightPerUserUnderConcurrency(t *testing.T) {
	r := newRig(t)
	f := newFake("sip")
	f.delay = 500 * time.Microsecond
	d := NewDispatcher(Options{Settings: filled(Settings{BatchSize: 7}), Outbox: BoltOutbox(r.db), Targets: []Target{f}, Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	start(t, d)
	const pollers, perPoller, rounds = 4, 25, 20
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, pollers)
	for p := range pollers {
		wg.Go(func() {
			for round := range rounds {
				var changes []presence.Change
				for u := range perPoller {
					upn := fmt.Sprintf("p%d-u%02d@x", p, u)
					s := states[(u+round)%len(states)]
					changes = append(changes, presence.Change{User: users.User{UPN: upn},
						Current: presence.State{UPN: upn, Availability: s.a, Activity: s.act, Changed: t0.Add(time.Duration(round) * time.Minute)}})
				}
				if err := d.Enqueue(context.Background(), itemsOf(changes)); err != nil {
					errs <- err
					return
				}
				time.Sleep(rand.N(time.Millisecond))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitUntil(t, "the outbox to drain", func() bool { return d.Pending("sip") == 0 })
	last := t0.Add((rounds - 1) * time.Minute)
	for p := range pollers {
		for u := range perPoller {
			upn := fmt.Sprintf("p%d-u%02d@x", p, u)
			got := f.got(upn)
			if len(got) == 0 {
				t.Fatalf("%s: nothing delivered", upn)
			}
			for i := 1; i < len(got); i++ {
				if got[i].Seq <= got[i-1].Seq || got[i].Queued.Before(got[i-1].Queued) {
					t.Errorf("%s: state of %s (seq %d) accepted after state of %s (seq %d)", upn,
						got[i].Queued.Format(time.TimeOnly), got[i].Seq, got[i-1].Queued.Format(time.TimeOnly), got[i-1].Seq)
				}
			}
			if fin := got[len(got)-1]; !fin.Queued.Equal(last) || fin.Reason != ReasonChange || fin.Mapped != presence.DefaultMapping().Map(fin.State) {
				t.Errorf("%s: last accepted %+v, want the round %d state, mapped", upn, fin, rounds-1)
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.overlap) > 0 {
		t.Errorf("users in two Sends at once: %v", f.overlap)
	}
}

// Users whose state keeps changing do not starve the others: the worker takes
// the outbox round robin, not always from the first key.
func TestBusyUsersDoNotStarveOthers(t *testing.T) {
	r := newRig(t)
	f := newFake("sip")
	f.gate, f.started = make(chan struct{}), make(chan []Item, 8)
	d := NewDispatcher(Options{Settings: filled(Settings{BatchSize: 2}), Outbox: BoltOutbox(r.db), Targets: []Target{f}, Clock: r.clk, Logger: slog.New(slog.DiscardHandler)})
	var all []Item
	for _, u := range []string{"a@x", "b@x", "c@x", "d@x"} {
		all = append(all, item(u, presence.Busy, presence.ActInACall))
	}
	d.Enqueue(context.Background(), all)
	start(t, d)
	next := func() []string {
		t.Helper()
		select {
		case items := <-f.started:
			var upns []string
			for _, it := range items {
				upns = append(upns, it.User.UPN)
			}
			return upns
		case <-time.After(10 * time.Second):
			t.Fatal("no Send")
			return nil
		}
	}
	if got := next(); !slices.Equal(got, []string{"a@x", "b@x"}) {
		t.Fatalf("first batch %v", got)
	}
	// a and b change again while their first states are in flight.
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Away, presence.ActAway), item("b@x", presence.Away, presence.ActAway)})
	f.gate <- struct{}{}
	if got := next(); !slices.Equal(got, []string{"c@x", "d@x"}) {
		t.Fatalf("second batch %v, want c and d before a and b go again", got)
	}
	f.gate <- struct{}{}
	if got := next(); !slices.Equal(got, []string{"a@x", "b@x"}) {
		t.Fatalf("third batch %v", got)
	}
	f.gate <- struct{}{}
	waitUntil(t, "the outbox to drain", func() bool { return d.Pending("sip") == 0 })
	for _, u := range []string{"a@x", "b@x"} {
		if got := f.got(u); len(got) != 2 || got[1].State.Activity != presence.ActAway {
			t.Errorf("%s accepted %+v, want the call then Away", u, got)
		}
	}
}

// acceptingTarget serves only users whose UPN starts with "sip".
type acceptingTarget struct{ *fakeTarget }

func (a acceptingTarget) Accepts(u users.User) bool { return strings.HasPrefix(u.UPN, "sip") }

// A target that serves only some users (SIP needs a SIP URI) gets only theirs.
func TestAccepterFiltersQueue(t *testing.T) {
	r := newRig(t)
	all, some := newFake("http"), acceptingTarget{newFake("sip")}
	d := r.dispatcher(all, some)
	d.Enqueue(context.Background(), []Item{item("sip1@x", presence.Busy, presence.ActBusy), item("ext1@x", presence.Busy, presence.ActBusy)})
	if d.Pending("http") != 2 || d.Pending("sip") != 1 {
		t.Fatalf("pending http=%d sip=%d, want 2 and 1", d.Pending("http"), d.Pending("sip"))
	}
}

// One user whose document the target always fails with a 5xx (while it accepts
// everyone else's) backs off on its own: the target is not reported down and
// other users' changes are not held behind a target-wide back-off.
func TestOneFailingUserDoesNotHoldBackOthers(t *testing.T) {
	r := newRig(t)
	f := newFake("http")
	f.broken = map[string]bool{"poison@x": true}
	d := r.dispatcher(f)
	d.Enqueue(context.Background(), []Item{item("poison@x", presence.Busy, presence.ActInACall), item("a@x", presence.Busy, presence.ActInACall)})
	start(t, d)
	for i := range 6 {
		upn := fmt.Sprintf("u%d@x", i)
		d.Enqueue(context.Background(), []Item{item(upn, presence.Away, presence.ActAway)})
		waitUntil(t, upn+" to be delivered", func() bool { return len(f.got(upn)) == 1 })
		if st := d.Status()[0]; st.Down || !st.BackoffUntil.IsZero() {
			t.Fatalf("after %s: status %+v, want the target up and not backing off", upn, st)
		}
	}
	waitUntil(t, "only poison@x to stay pending", func() bool { return d.Pending("http") == 1 })
	if len(f.got("a@x")) != 1 || len(f.got("poison@x")) != 0 {
		t.Errorf("a@x got %v, poison@x got %v; want a@x delivered and poison@x not", f.got("a@x"), f.got("poison@x"))
	}
	if logs := r.logs.String(); strings.Contains(logs, "target down") {
		t.Errorf("one failing user reported the whole target down:\n%s", logs)
	}
	if st := d.Status()[0]; st.Failed < 2 {
		t.Errorf("status %+v, want poison@x retried (Failed >= 2)", st)
	}
}

// reasserts lists the re-asserted (reason sync) items a user got.
func (f *fakeTarget) reasserts(upn string) []Item {
	var out []Item
	for _, it := range f.got(upn) {
		if it.Reason == ReasonSync {
			out = append(out, it)
		}
	}
	return out
}

// A PBX may restart and forget what it was told: every user's last accepted state
// is re-asserted at start and when the target is back after being down, paced at
// ReassertRate and behind the live changes.
func TestReassertAtStartAndAfterAnOutage(t *testing.T) {
	r := newRig(t)
	f := newFake("http")
	const n = 10
	d := r.dispatcher(f)
	stop := start(t, d)
	var items []Item
	for i := range n {
		items = append(items, item(fmt.Sprintf("u%d@x", i), presence.Available, presence.ActAvailable))
	}
	d.Enqueue(context.Background(), items)
	waitUntil(t, "first delivery", func() bool { return d.Pending("http") == 0 && len(f.got("u9@x")) == 1 })
	stop()

	// A restart re-asserts each user's last state once, with its sequence number,
	// two users a second.
	d = NewDispatcher(Options{Settings: filled(Settings{RetryMin: time.Second, RetryMax: 8 * time.Second, BatchSize: 50, ReassertRate: 2}), Outbox: BoltOutbox(r.db), Targets: []Target{f}, Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	before := r.clk.Now()
	stop = start(t, d)
	waitUntil(t, "the re-assertion at start", func() bool {
		for i := range n {
			if len(f.reasserts(fmt.Sprintf("u%d@x", i))) != 1 {
				return false
			}
		}
		st := d.Status()[0]
		return !st.Reasserting && st.Reasserted == n
	})
	if got := f.reasserts("u3@x")[0]; got.Seq != f.got("u3@x")[0].Seq || got.State.Activity != presence.ActAvailable {
		t.Errorf("re-asserted %+v, want the last accepted state with its seq", got)
	}
	if took := r.clk.Now().Sub(before); took < 4*time.Second {
		t.Errorf("10 users at 2 a second took %s on the clock, want at least 4 s", took)
	}

	// Down while a user changes, then back: everyone is re-asserted again.
	f.mu.Lock()
	f.failNext = 1
	f.mu.Unlock()
	d.Enqueue(context.Background(), []Item{item("u0@x", presence.Busy, presence.ActInACall)})
	waitUntil(t, "the change and a second re-assertion", func() bool {
		for i := 1; i < n; i++ {
			if len(f.reasserts(fmt.Sprintf("u%d@x", i))) != 2 {
				return false
			}
		}
		return len(f.reasserts("u0@x")) == 2
	})
	got := f.got("u0@x")
	if last := got[len(got)-1]; last.State.Activity != presence.ActInACall {
		t.Errorf("u0 ends with %+v, want the change (re-assertions never send an older state after a newer one)", last)
	}
	if !strings.Contains(r.logs.String(), `why="the target is back"`) {
		t.Errorf("the log does not say why the states are re-asserted:\n%s", r.logs.String())
	}
	stop()
}

// probingTarget is a fakeTarget that is a Prober.
type probingTarget struct {
	*fakeTarget
	probeErr chan error // each Probe takes the next error
	probes   int
}

func (p *probingTarget) Probe(ctx context.Context) error {
	p.mu.Lock()
	p.probes++
	p.mu.Unlock()
	select {
	case err := <-p.probeErr:
		return err
	default:
		return nil
	}
}

// An idle target is probed every ProbeInterval: unreachable marks it down, and
// back (or a target that lost its state) starts a re-assertion, so a PBX that
// restarts at a quiet time is told again.
func TestProbeWhileIdle(t *testing.T) {
	r := newRig(t)
	p := &probingTarget{fakeTarget: newFake("sip"), probeErr: make(chan error, 4)}
	d := NewDispatcher(Options{Settings: filled(Settings{RetryMin: time.Second, RetryMax: 8 * time.Second, ReassertRate: 100, ProbeInterval: 30 * time.Second}), Outbox: BoltOutbox(r.db), Targets: []Target{p}, Clock: r.clk, Logger: slog.New(slog.NewTextHandler(r.logs, nil))})
	d.Enqueue(context.Background(), []Item{item("a@x", presence.Available, presence.ActAvailable)})
	p.probeErr <- fmt.Errorf("OPTIONS: no answer: %w", ErrTargetDown)
	p.probeErr <- nil
	p.probeErr <- ErrTargetForgot
	start(t, d)
	waitUntil(t, "re-assertions at start, when back and after the target lost its state", func() bool { return len(p.reasserts("a@x")) == 3 })
	logs := r.logs.String()
	for _, want := range []string{"Delivery target down", "Delivery target back", "Delivery target lost the states it was given"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	// The idle waits run to the next probe: 30 s after the last one (less the
	// few milliseconds a re-assertion page took, on this clock).
	if sl := r.clk.Sleeps(); !slices.ContainsFunc(sl, func(d time.Duration) bool { return d > 29*time.Second && d <= 30*time.Second }) {
		t.Errorf("sleeps %v, want waits for the 30 s probe interval", sl)
	}
}

// What the target accepts after the re-assertion began is not re-asserted: a
// first start sends each user's first state once, not twice.
func TestReassertSkipsWhatIsNew(t *testing.T) {
	r := newRig(t)
	f := newFake("http")
	d := NewDispatcher(Options{Settings: filled(Settings{ReassertRate: 1000}), Outbox: BoltOutbox(r.db), Targets: []Target{f}, Logger: slog.New(slog.DiscardHandler)})
	start(t, d)
	time.Sleep(10 * time.Millisecond)
	var items []Item
	for i := range 10 {
		items = append(items, item(fmt.Sprintf("u%d@x", i), presence.Available, presence.ActAvailable))
	}
	d.Enqueue(context.Background(), items)
	waitUntil(t, "delivery and the end of the re-assertion", func() bool {
		return d.Pending("http") == 0 && len(f.got("u9@x")) >= 1 && !d.Status()[0].Reasserting
	})
	for i := range 10 {
		if got := f.got(fmt.Sprintf("u%d@x", i)); len(got) != 1 {
			t.Errorf("u%d got %d states, want its first state once", i, len(got))
		}
	}
}

// itemsOf maps changes as the composer does: through the default table.
func itemsOf(changes []presence.Change) []Item {
	items := make([]Item, len(changes))
	for i, c := range changes {
		items[i] = Item{User: c.User, State: c.Current, Mapped: presence.DefaultMapping().Map(c.Current), Reason: ReasonChange, Queued: c.Current.Changed}
	}
	return items
}

func TestNewDispatcherRefusesIncompleteSettings(t *testing.T) {
	for _, s := range []Settings{{}, {BatchSize: 1, RetryMin: time.Second}, {BatchSize: 1, RetryMin: time.Second, RetryMax: time.Second, ReassertRate: -1}} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "incomplete Settings") {
					t.Errorf("settings %+v: recovered %v, want the incomplete-settings panic", s, r)
				}
			}()
			NewDispatcher(Options{Settings: s})
		}()
	}
}

// The target's status counts how long each accepted change took from its Teams
// change (Item.Queued) to the acceptance, by the dispatcher's clock, and the
// PBX's own states apart; sync-all and refused states are not counted.
func TestLatencyOfAcceptedChanges(t *testing.T) {
	r := newRig(t)
	f := newFake("http")
	f.refuse["bad@x"] = true
	f.gate, f.started = make(chan struct{}), make(chan []Item, 4)
	d := r.dispatcher(f)
	t0 := r.clk.Now()
	change := item("a@x", presence.Busy, presence.ActInACall)
	change.Queued = t0.Add(-1200 * time.Millisecond) // changed in Teams 1.2 s ago
	pbx := item("b@x", presence.Busy, presence.ActInACall)
	pbx.Reason, pbx.Queued = ReasonPBX, t0.Add(-100*time.Millisecond)
	sync := item("c@x", presence.Away, presence.ActAway)
	sync.Reason, sync.Queued = ReasonSync, t0.Add(-time.Hour)
	refused := item("bad@x", presence.Away, presence.ActAway)
	refused.Queued = t0.Add(-time.Second)
	if err := d.Enqueue(context.Background(), []Item{change, pbx, sync, refused}); err != nil {
		t.Fatal(err)
	}
	start(t, d)
	select {
	case <-f.started:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing sent")
	}
	r.clk.Advance(2 * time.Second) // the target takes 2 s to answer
	f.gate <- struct{}{}
	waitUntil(t, "the batch settled", func() bool { st := d.Status()[0]; return st.Sent == 3 && st.Dropped == 1 })
	st := d.Status()[0]
	cl, pl := st.ChangeLatency, st.PBXLatency
	if cl.Count != 1 || math.Abs(cl.Sum-3.2) > 1e-6 || cl.Buckets()[3] != 0 || cl.Buckets()[3.5] != 1 {
		t.Errorf("change latency %+v; want one of 3.2 s (in the bucket up to 3.5 s)", cl)
	}
	if pl.Count != 1 || math.Abs(pl.Sum-2.1) > 1e-6 || pl.Buckets()[2] != 0 || pl.Buckets()[2.5] != 1 {
		t.Errorf("PBX latency %+v; want one of 2.1 s", pl)
	}
	if p := cl.P50; p <= 3 || p > 3.5 {
		t.Errorf("p50 %g outside the bucket of the only observation (3, 3.5]", p)
	}
}
