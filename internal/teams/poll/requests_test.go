package poll

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/teams/budget"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
)

// Every try of a presence read against the simulated tenant is counted, by
// outcome: a 429, two 503s and the 200 that follows them are four requests of
// one chunk, and the next cycle's read a fifth.
func TestIntegrationRequestsTimedByOutcome(t *testing.T) {
	r := newRig(t, 30, 1500)
	r.sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 429, RetryAfter: "1"})
	r.sim.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 503, Count: 2})
	var reqs Requests
	p, err := New(Options{Settings: filled(Settings{Interval: time.Second, RequestTimeout: 10 * time.Second}), Account: "a", Users: r.us,
		Graph: TimeRequests(r.gc, r.clk, &reqs), Store: r.db, Sink: &countingSink{}, Budget: budget.New(1500, 30*time.Second, 0.6, r.clk),
		Clock: r.clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for deadline := time.Now().Add(30 * time.Second); p.Status().Cycles < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d cycles ran", p.Status().Cycles)
		}
	}
	cancel()
	<-done
	st := reqs.Status()
	if st.OK.Count < 2 || st.Throttled.Count != 1 || st.Error.Count != 2 {
		t.Errorf("counted ok %d, throttled %d, error %d; want at least 2, 1 and 2", st.OK.Count, st.Throttled.Count, st.Error.Count)
	}
	if ok := p.Status(); ok.Throttled != 1 {
		t.Errorf("the poller saw %d 429s; want the 1 the timer counted", ok.Throttled)
	}
}

// slowGraph takes took of the fake clock per read and answers err.
type slowGraph struct {
	GraphAPI
	clk  *clock.Fake
	took time.Duration
	err  error
}

func (g slowGraph) GetPresences(ctx context.Context, ids []string) ([]graph.Presence, error) {
	g.clk.Advance(g.took)
	if g.err != nil {
		return nil, g.err
	}
	return []graph.Presence{{ID: ids[0], Availability: "Available", Activity: "Available"}}, nil
}

// Each read's duration is the clock's time across the call, in the outcome's
// histogram; a read cut short by a stop is not counted, a timeout is an error.
func TestTimeRequestsDurations(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC))
	var reqs Requests
	read := func(took time.Duration, err error, ctx context.Context) {
		t.Helper()
		g := TimeRequests(slowGraph{clk: clk, took: took, err: err}, clk, &reqs)
		if _, got := g.GetPresences(ctx, []string{"id"}); !errors.Is(got, err) {
			t.Fatalf("the wrapped read returned %v; want %v", got, err)
		}
	}
	bg := context.Background()
	read(300*time.Millisecond, nil, bg)
	read(1200*time.Millisecond, nil, bg)
	read(80*time.Millisecond, &graph.ThrottledError{RetryAfter: time.Second, HasRetryAfter: true}, bg)
	timeout, cancelT := context.WithDeadline(bg, clk.Now().Add(-time.Second))
	defer cancelT()
	read(20*time.Second, context.DeadlineExceeded, timeout)
	stopped, cancel := context.WithCancel(bg)
	cancel()
	read(5*time.Second, context.Canceled, stopped)

	st := reqs.Status()
	if st.OK.Count != 2 || math.Abs(st.OK.Sum-1.5) > 1e-6 || st.OK.Buckets()[0.5] != 1 || st.OK.Buckets()[1.5] != 2 {
		t.Errorf("ok %+v; want 0.3 s and 1.2 s", st.OK)
	}
	if st.Throttled.Count != 1 || math.Abs(st.Throttled.Sum-0.08) > 1e-6 {
		t.Errorf("throttled %+v; want one of 80 ms", st.Throttled)
	}
	if st.Error.Count != 1 || math.Abs(st.Error.Sum-20) > 1e-6 {
		t.Errorf("error %+v; want the 20 s timeout only (the stopped read is not counted)", st.Error)
	}
}
