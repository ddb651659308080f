// Package clock lets code that waits (backoff, Retry-After, cycle pacing, a file
// watch) be tested without sleeping: production uses Real, tests use a Fake that
// advances instantly. A wait that something else may cut short is a plain select
// on a Timer's channel beside that something.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock is the time source every waiting component takes.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, whichever comes first; it returns ctx.Err()
	// when cut short.
	Sleep(ctx context.Context, d time.Duration) error
	// NewTimer returns a Timer whose channel receives the time once d has passed.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a Ticker whose channel receives the time every d.
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop keeps the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// Ticker is a time.Ticker of a Clock.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Sleep waits d on a timer, or returns early when ctx ends.
func (Real) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewTimer is time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker is time.NewTicker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Fake is a manual clock: Sleep and a Timer advance it by their duration at once
// and record the duration, so a test can assert how long the code chose to wait;
// a Timer fires at once. Tickers fire when the time passes their next tick.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	sleeps  []time.Duration
	tickers []*fakeTicker
}

// NewFake returns a Fake clock reading t0.
func NewFake(t0 time.Time) *Fake { return &Fake{now: t0} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Sleep advances the fake time by d (if positive) and records d.
func (f *Fake) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(d)
	f.sleeps = append(f.sleeps, d)
	return nil
}

// NewTimer advances the fake time by d, records d, and returns a timer that has
// fired (as a Sleep of d would have ended).
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(d)
	f.sleeps = append(f.sleeps, d)
	c := make(chan time.Time, 1)
	c <- f.now
	return fakeTimer{c}
}

type fakeTimer struct{ c chan time.Time }

func (t fakeTimer) C() <-chan time.Time { return t.c }
func (t fakeTimer) Stop() bool          { return false }

// NewTicker returns a ticker that fires whenever the fake time passes its next
// tick (at most one tick waits in its channel, as with time.Ticker).
func (f *Fake) NewTicker(d time.Duration) Ticker {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTicker{f: f, every: d, next: f.now.Add(d), c: make(chan time.Time, 1)}
	f.tickers = append(f.tickers, t)
	return t
}

type fakeTicker struct {
	f     *Fake
	every time.Duration
	next  time.Time
	c     chan time.Time
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }

func (t *fakeTicker) Stop() {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, o := range t.f.tickers {
		if o == t {
			t.f.tickers = append(t.f.tickers[:i], t.f.tickers[i+1:]...)
			break
		}
	}
}

// advance moves the time on by d and fires the tickers it passes (f.mu held).
func (f *Fake) advance(d time.Duration) {
	if d > 0 {
		f.now = f.now.Add(d)
	}
	for _, t := range f.tickers {
		if t.next.After(f.now) {
			continue
		}
		for !t.next.After(f.now) {
			t.next = t.next.Add(t.every)
		}
		select {
		case t.c <- f.now:
		default:
		}
	}
}

// Advance moves the fake time forward by d without recording a sleep.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(d)
}

// Sleeps returns a copy of every duration passed to Sleep and NewTimer, in order.
func (f *Fake) Sleeps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.sleeps...)
}
