// Package backoff is the one retry schedule of presencebridge: waits that start at
// Min, double after every failure up to Max, and are spread by ±Jitter so that
// accounts, targets and users do not retry in lockstep. Polling (a failing Graph
// request), delivery (a target or a user the target refuses) and the SIP refresh
// all wait by it; the caller sleeps on its injected clock.
package backoff

import (
	"math/rand/v2"
	"time"
)

// DefaultJitter spreads each wait by ±20%.
const DefaultJitter = 0.2

// Policy is a schedule. The zero Jitter means DefaultJitter; a negative one none.
type Policy struct {
	Min, Max time.Duration
	Jitter   float64
}

// Step is the wait after prev (0: none yet): Min first, then doubling up to Max,
// without jitter.
func (p Policy) Step(prev time.Duration) time.Duration {
	if prev <= 0 {
		return p.Min
	}
	return min(prev*2, max(p.Max, p.Min))
}

// Spread is d spread by ±Jitter.
func (p Policy) Spread(d time.Duration) time.Duration {
	j := p.Jitter
	switch {
	case j == 0:
		j = DefaultJitter
	case j < 0:
		return d
	}
	return d + time.Duration((rand.Float64()*2*j-j)*float64(d))
}

// Backoff walks a Policy for one thing that keeps failing.
type Backoff struct {
	Policy
	step time.Duration // the last un-jittered wait; 0 after Reset
}

// Next is the wait before the next try (jittered), and moves the schedule on.
func (b *Backoff) Next() time.Duration {
	b.step = b.Step(b.step)
	return b.Spread(b.step)
}

// Current is the last un-jittered wait Next gave, 0 after Reset.
func (b *Backoff) Current() time.Duration { return b.step }

// Reset starts the schedule over (the thing works again).
func (b *Backoff) Reset() { b.step = 0 }
