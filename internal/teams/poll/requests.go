package poll

import (
	"context"
	"errors"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/histogram"
	"github.com/presencebridge/presencebridge/internal/teams/graph"
)

// Requests are the durations of an account's presence reads
// (getPresencesByUserId), every try of every chunk, by outcome: OK (200),
// Throttled (429) and Error (anything else, a timeout at RequestTimeout
// included). Safe for concurrent use; the zero value is ready.
type Requests struct {
	OK, Throttled, Error histogram.Histogram
}

// RequestsStatus is a snapshot of Requests, for status and metrics.
type RequestsStatus struct {
	OK        histogram.Snapshot `json:"ok"`
	Throttled histogram.Snapshot `json:"throttled,omitzero"`
	Error     histogram.Snapshot `json:"error,omitzero"`
}

// Status takes a snapshot.
func (r *Requests) Status() RequestsStatus {
	return RequestsStatus{OK: r.OK.Snapshot(), Throttled: r.Throttled.Snapshot(), Error: r.Error.Snapshot()}
}

// TimeRequests wraps g so that the duration of each GetPresences call, by clk,
// is counted in into: it is the poller's Graph, so every try fetch makes is
// timed where it is made, without the poller knowing. A read cut short because
// the poller is stopping (its context canceled, not timed out) is not counted.
func TimeRequests(g GraphAPI, clk clock.Clock, into *Requests) GraphAPI {
	return timedGraph{GraphAPI: g, clk: clk, into: into}
}

type timedGraph struct {
	GraphAPI
	clk  clock.Clock
	into *Requests
}

func (t timedGraph) GetPresences(ctx context.Context, ids []string) ([]graph.Presence, error) {
	start := t.clk.Now()
	ps, err := t.GraphAPI.GetPresences(ctx, ids)
	took := t.clk.Now().Sub(start)
	var te *graph.ThrottledError
	switch {
	case err == nil:
		t.into.OK.Observe(took)
	case errors.As(err, &te):
		t.into.Throttled.Observe(took)
	case errors.Is(ctx.Err(), context.Canceled):
		// Stopping: not a Graph figure.
	default:
		t.into.Error.Observe(took)
	}
	return ps, err
}
