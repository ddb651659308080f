// Package budget keeps presencebridge inside Graph's throttle budget for one app in
// one tenant: getPresencesByUserId allows 1,500 requests per 30 s per application per
// tenant (Microsoft Graph throttling limits, "Presence" service limits), and
// presencebridge uses only a configured share of it. A 429's Retry-After pauses
// every request of that budget until it has passed.
package budget

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
)

// Budget paces the requests of one app+tenant.
type Budget struct {
	clk    clock.Clock
	limit  int
	window time.Duration
	share  float64

	mu    sync.Mutex
	lim   *rate.Limiter
	pause time.Time
	first int         // WaitFirst callers waiting: Wait lets them go ahead
	sent  []time.Time // send times within the last window, oldest first
}

// New returns a budget allowing share (0..1] of limit requests per window, evenly
// spread (burst 1), so no window ever sees more than share*limit+1 requests.
func New(limit int, window time.Duration, share float64, clk clock.Clock) *Budget {
	if clk == nil {
		clk = clock.Real{}
	}
	b := &Budget{clk: clk, limit: limit, window: window, share: share}
	b.lim = rate.NewLimiter(rate.Limit(b.Rate()), 1)
	return b
}

// Rate is the allowed requests per second.
func (b *Budget) Rate() float64 {
	return b.share * float64(b.limit) / b.window.Seconds()
}

// Wait blocks until the next request may be sent (or ctx ends), then counts it.
func (b *Budget) Wait(ctx context.Context) error { return b.wait(ctx, false) }

// WaitFirst is Wait for a request that goes before every Wait (a write to Teams
// before the next poll): while one waits, Wait callers hold back, so polling
// stretches its cycle instead of the write waiting for it.
func (b *Budget) WaitFirst(ctx context.Context) error {
	b.mu.Lock()
	b.first++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.first--
		b.mu.Unlock()
	}()
	return b.wait(ctx, true)
}

func (b *Budget) wait(ctx context.Context, first bool) error {
	for {
		b.mu.Lock()
		now := b.clk.Now()
		if !first && b.first > 0 {
			// Give way for one request's time, then look again.
			d := time.Duration(float64(time.Second) / b.Rate())
			b.mu.Unlock()
			if err := b.clk.Sleep(ctx, max(d, time.Millisecond)); err != nil {
				return err
			}
			continue
		}
		if now.Before(b.pause) {
			d := b.pause.Sub(now)
			b.mu.Unlock()
			if err := b.clk.Sleep(ctx, d); err != nil {
				return err
			}
			continue
		}
		r := b.lim.ReserveN(now, 1)
		d := r.DelayFrom(now)
		if d == 0 {
			b.record(now)
			b.mu.Unlock()
			return nil
		}
		r.CancelAt(now)
		b.mu.Unlock()
		if err := b.clk.Sleep(ctx, d); err != nil {
			return err
		}
	}
}

func (b *Budget) record(now time.Time) {
	b.sent = append(b.sent, now)
	b.trim(now)
}

func (b *Budget) trim(now time.Time) {
	cut := now.Add(-b.window)
	i := 0
	for i < len(b.sent) && !b.sent[i].After(cut) {
		i++
	}
	b.sent = b.sent[i:]
}

// PauseUntil stops all requests until t (a 429's Retry-After, obeyed exactly).
func (b *Budget) PauseUntil(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.After(b.pause) {
		b.pause = t
	}
}

// MinCycle is the fastest cycle the budget allows for that many requests a
// cycle, cycles following each other: requests at the budget's pace, so a
// cycle of n requests takes n gaps (its last request's gap is the next
// cycle's first).
func (b *Budget) MinCycle(requests int) time.Duration {
	if requests <= 0 {
		return 0
	}
	secs := float64(requests) / b.Rate()
	return time.Duration(math.Ceil(secs*1000)) * time.Millisecond // whole ms, as logs and status show it
}

// Used reports the requests sent in the last window and their share of the limit.
func (b *Budget) Used() (requestsInWindow int, share float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trim(b.clk.Now())
	return len(b.sent), float64(len(b.sent)) / float64(b.limit)
}
