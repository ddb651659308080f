package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/backoff"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/histogram"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Settings are the [Delivery] keys of the dispatcher: batches, retries,
// re-assertion and probes.
type Settings struct {
	// BatchSize is the most items handed to one Send.
	BatchSize int
	// RetryMin and RetryMax bound the retry delay of a failing target or user;
	// it doubles per failure, with ±20% jitter.
	RetryMin, RetryMax time.Duration
	// ReassertRate is how many states per second a target is re-asserted at (see
	// Reasserter): at start (unless NoReassertAtStart) and when it is back after
	// being down, every user's last accepted state, behind the live changes. 0
	// turns re-asserting off.
	ReassertRate float64
	// ProbeInterval is how often a target that implements Prober is probed while
	// there is nothing to send (0: never), so that an outage or a restart of the
	// PBX at a quiet time is noticed too.
	ProbeInterval time.Duration
}

// DefaultSettings are [Delivery]'s defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{BatchSize: 500, RetryMin: time.Second, RetryMax: time.Minute, ReassertRate: 200, ProbeInterval: 30 * time.Second}
}

// Options configure a Dispatcher.
type Options struct {
	Settings
	// Outbox keeps the pending and delivered states (BoltOutbox in the service).
	Outbox  Outbox
	Targets []Target
	Clock   clock.Clock
	Logger  *slog.Logger
	// NoReassertAtStart skips the re-assertion at start: the dispatcher takes
	// over from one that ran until now (a reload), so nothing was missed.
	NoReassertAtStart bool
}

// TargetStatus is one target's delivery state for status and metrics.
type TargetStatus struct {
	Name         string    `json:"name"`
	Pending      int       `json:"pending"`
	Sent         int       `json:"sent"`   // items accepted since start
	Failed       int       `json:"failed"` // failed attempts since start
	Dropped      int       `json:"dropped"`
	LastOK       time.Time `json:"lastOK,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	Down         bool      `json:"down"`
	BackoffUntil time.Time `json:"backoffUntil,omitzero"`
	// Reasserting is set while the users' last states are re-asserted (at start,
	// and after the target was down); Reasserted counts those re-asserted since.
	Reasserting bool `json:"reasserting,omitempty"`
	Reasserted  int  `json:"reasserted"`
	// ChangeLatency is the time from each Teams change (Item.Queued of a
	// ReasonChange item) to the target's acceptance of it, by the dispatcher's
	// clock; PBXLatency the same for the states the PBX's own calls decided
	// (ReasonPBX, from when the watch read the PBX's state). Both since start.
	ChangeLatency histogram.Snapshot `json:"changeLatency,omitzero"`
	PBXLatency    histogram.Snapshot `json:"pbxLatency,omitzero"`
}

// Dispatcher queues each user's newest state for every target and runs one
// worker per target. A worker has one Send in flight at a time, so a user never
// has two states in flight and a superseded state is never sent after a newer one.
type Dispatcher struct {
	closeOnce sync.Once
	o         Options
	names     []string
	accepts   []func(users.User) bool // per target; nil takes every user
	workers   []*worker
}

// NewDispatcher builds a dispatcher of settings config has checked (it panics
// on settings that are not: a mistake in the code); Run starts delivering.
func NewDispatcher(o Options) *Dispatcher {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BatchSize < 1 || o.RetryMin <= 0 || o.RetryMax < o.RetryMin || o.ReassertRate < 0 || o.ProbeInterval < 0 {
		panic("delivery.NewDispatcher: incomplete Settings (start from DefaultSettings, or config's [Delivery])")
	}
	d := &Dispatcher{o: o}
	for _, t := range o.Targets {
		d.names = append(d.names, t.Name())
		var accepts func(users.User) bool
		if a, ok := t.(Accepter); ok {
			accepts = a.Accepts
		}
		d.accepts = append(d.accepts, accepts)
		policy := backoff.Policy{Min: o.RetryMin, Max: o.RetryMax}
		d.workers = append(d.workers, &worker{d: d, t: t, wake: make(chan struct{}, 1),
			policy: policy, backoff: backoff.Backoff{Policy: policy}, storeWait: backoff.Backoff{Policy: policy},
			retryAt: map[string]time.Time{}, userBackoff: map[string]time.Duration{},
			logged: map[string]uint64{}, st: TargetStatus{Name: t.Name()},
			log: o.Logger.With("target", t.Name())})
	}
	return d
}

// Targets lists the targets' names.
func (d *Dispatcher) Targets() []string { return d.names }

// Enqueue stores items for every target (replacing older pending states of the
// same users) and wakes the workers. Items need User, Mapped, Reason and Queued.
func (d *Dispatcher) Enqueue(_ context.Context, items []Item) error {
	if len(items) == 0 || len(d.workers) == 0 {
		return nil
	}
	if err := d.o.Outbox.Enqueue(d.names, d.accepts, items); err != nil {
		return fmt.Errorf("queue %d states for delivery: %w", len(items), err)
	}
	for _, w := range d.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// WithdrawDeparted queues a removal for every user the PBX shows who is no
// longer in the users file (listed says who is), so the PBX stops showing their
// last state. It returns how many.
func (d *Dispatcher) WithdrawDeparted(ctx context.Context, listed func(upn string) bool) (int, error) {
	shown, err := d.o.Outbox.Shown()
	if err != nil {
		return 0, err
	}
	var items []Item
	now := d.o.Clock.Now().UTC()
	for upn, dl := range shown {
		if !listed(upn) {
			items = append(items, Item{User: dl.User, State: dl.State, Mapped: dl.Mapped, Reason: ReasonRemove, Queued: now})
		}
	}
	if len(items) == 0 {
		return 0, nil
	}
	d.o.Logger.Info("Users left the users file; withdrawing their presence from the PBX", "users", len(items))
	return len(items), d.Enqueue(ctx, items)
}

// Run delivers until ctx ends, starting with what earlier runs left pending.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx) }()
	}
	wg.Wait()
	return nil
}

// Close closes the targets (after Run has returned); queued states stay queued.
func (d *Dispatcher) Close() {
	d.closeOnce.Do(func() {
		for _, w := range d.workers {
			if err := w.t.Close(); err != nil {
				d.o.Logger.Warn("Closing delivery target failed", "target", w.t.Name(), "err", err)
			}
		}
	})
}

// Pending counts the states target has not accepted yet.
func (d *Dispatcher) Pending(target string) int { return d.o.Outbox.Pending(target) }

// Delivered lists what each target last accepted for upn.
func (d *Dispatcher) Delivered(upn string) []Delivered {
	var out []Delivered
	for _, n := range d.names {
		if dl, ok, err := d.o.Outbox.Delivered(n, upn); err == nil && ok {
			out = append(out, dl)
		}
	}
	return out
}

// PendingFor names the targets that have a state for upn not yet accepted.
func (d *Dispatcher) PendingFor(upn string) []string {
	var out []string
	for _, n := range d.names {
		if d.o.Outbox.HasPending(n, upn) {
			out = append(out, n)
		}
	}
	return out
}

// Status reports every target.
func (d *Dispatcher) Status() []TargetStatus {
	out := make([]TargetStatus, 0, len(d.workers))
	for _, w := range d.workers {
		w.mu.Lock()
		st := w.st
		w.mu.Unlock()
		st.Pending = d.o.Outbox.Pending(w.t.Name())
		st.ChangeLatency, st.PBXLatency = w.changeLatency.Snapshot(), w.pbxLatency.Snapshot()
		out = append(out, st)
	}
	return out
}

type worker struct {
	d    *Dispatcher
	t    Target
	log  *slog.Logger
	wake chan struct{}

	// Owned by the run goroutine.
	retryAt     map[string]time.Time     // UPN -> not before (a user the target refused)
	userBackoff map[string]time.Duration // UPN -> last back-off
	logged      map[string]uint64        // UPN -> Seq of the last permanent refusal logged
	policy      backoff.Policy           // RetryMin..RetryMax
	backoff     backoff.Backoff          // the target's, while it is down
	storeWait   backoff.Backoff          // while the state file cannot be written
	cursor      string                   // UPN of the last item picked (round robin)
	// Re-asserting: the states accepted before reassertFrom, the delivered key
	// read last, and when the next page is due.
	reassertFrom   time.Time
	reassertCursor string
	reassertNext   time.Time
	probeAt        time.Time // when an idle Prober is probed next

	mu sync.Mutex
	st TargetStatus

	// The latencies of accepted changes and PBX states (TargetStatus);
	// concurrent-safe on their own, outside mu.
	changeLatency, pbxLatency histogram.Histogram
}

func (w *worker) run(ctx context.Context) {
	clk := w.d.o.Clock
	w.mu.Lock()
	if w.d.o.ReassertRate > 0 && !w.d.o.NoReassertAtStart {
		w.startReassert("start")
	}
	w.mu.Unlock()
	w.probeAt = clk.Now().Add(w.d.o.ProbeInterval)
	for ctx.Err() == nil {
		now := clk.Now()
		var next time.Time // earliest per-user retry among the items held back
		items, last, err := w.d.o.Outbox.Pick(w.t.Name(), w.d.o.BatchSize, w.cursor, func(upn string) bool {
			if at, ok := w.retryAt[upn]; ok && at.After(now) {
				next = earliest(next, at)
				return false
			}
			return true
		})
		if err != nil {
			w.log.Error("Reading the outbox failed", "err", err)
			w.sleep(ctx, w.d.o.RetryMax)
			continue
		}
		w.cursor = last
		reasserting := w.reasserting()
		_, canProbe := w.t.(Prober)
		canProbe = canProbe && w.d.o.ProbeInterval > 0
		switch {
		case len(items) > 0:
			w.send(ctx, items)
		case reasserting && !now.Before(w.reassertNext):
			w.reassert(ctx)
		case canProbe && !now.Before(w.probeAt):
			w.probe(ctx)
		default:
			if reasserting {
				next = earliest(next, w.reassertNext)
			}
			if canProbe {
				next = earliest(next, w.probeAt)
			}
			w.idle(ctx, next)
			continue
		}
		w.mu.Lock()
		until := w.st.BackoffUntil
		w.mu.Unlock()
		if d := until.Sub(clk.Now()); d > 0 {
			w.sleep(ctx, d)
		}
	}
}

// earliest is the earlier of two times, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// idle waits for new items, or until next (a held-back retry) if set.
func (w *worker) idle(ctx context.Context, next time.Time) {
	var until <-chan time.Time // nil: no retry is due, only new items wake it
	if !next.IsZero() {
		t := w.d.o.Clock.NewTimer(next.Sub(w.d.o.Clock.Now()))
		defer t.Stop()
		until = t.C()
	}
	select {
	case <-ctx.Done():
	case <-w.wake:
	case <-until:
	}
}

func (w *worker) sleep(ctx context.Context, d time.Duration) { _ = w.d.o.Clock.Sleep(ctx, d) }

// startReassert begins re-asserting every user's last accepted state (w.mu held).
func (w *worker) startReassert(why string) {
	// What the target accepts from now on is new to it: only older states need it.
	w.reassertFrom = w.d.o.Clock.Now().UTC()
	w.reassertCursor, w.reassertNext = "", time.Time{}
	w.st.Reasserting = true
	if n := w.d.o.Outbox.CountDelivered(w.t.Name()); n > 0 {
		w.log.Info("Re-asserting the users' last states to the target", "why", why, "users", n, "perSecond", w.d.o.ReassertRate)
	}
}

func (w *worker) reasserting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.Reasserting
}

// reassert re-asserts the next page of last accepted states (a second's worth at
// ReassertRate), when no live state is pending. A page the target fails as a
// whole marks it down; the re-assertion then starts over when it is back.
func (w *worker) reassert(ctx context.Context) {
	rate := w.d.o.ReassertRate
	n := max(1, min(w.d.o.BatchSize, int(rate)))
	page, last, err := w.d.o.Outbox.DeliveredAfter(w.t.Name(), w.reassertCursor, n, w.reassertFrom)
	if err != nil {
		w.log.Error("Reading the delivered states failed; they are not re-asserted", "err", err)
	}
	if err != nil || len(page) == 0 {
		w.mu.Lock()
		w.st.Reasserting = false
		w.mu.Unlock()
		return
	}
	w.reassertCursor = last
	items := make([]Item, len(page))
	for i, d := range page {
		items[i] = Item{User: d.User, State: d.State, Mapped: d.Mapped, Reason: ReasonSync, Seq: d.Seq, Queued: d.Queued}
	}
	var errs []error
	if r, ok := w.t.(Reasserter); ok {
		errs = r.Reassert(ctx, items)
	} else {
		errs = w.t.Send(ctx, items)
	}
	now := w.d.o.Clock.Now()
	w.reassertNext = now.Add(time.Duration(float64(len(items)) / rate * float64(time.Second)))
	ok, down := 0, false
	var lastErr error
	for i := range items {
		switch {
		case i < len(errs) && errs[i] == nil:
			ok++
		case i < len(errs):
			lastErr = errs[i]
			down = down || errors.Is(errs[i], ErrTargetDown)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.Reasserted += ok
	switch {
	case ok == 0 && down && ctx.Err() == nil:
		w.st.Reasserting = false
		w.markDown(now, lastErr)
	case ok > 0:
		w.st.LastOK = now
	}
}

// probe asks an idle target whether it is there and still holds what it was
// told (Prober): unreachable marks it down, back or forgetful starts a
// re-assertion. While it is down it is probed at the back-off's pace.
func (w *worker) probe(ctx context.Context) {
	err := w.t.(Prober).Probe(ctx)
	now := w.d.o.Clock.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.probeAt = now.Add(w.d.o.ProbeInterval)
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, ErrTargetDown):
		w.markDown(now, err)
		w.probeAt = w.st.BackoffUntil
	case err != nil && !errors.Is(err, ErrTargetForgot):
		w.st.LastError = err.Error()
	default:
		wasDown := w.st.Down
		w.markUp()
		w.st.LastError = ""
		if err != nil && !wasDown && w.d.o.ReassertRate > 0 {
			w.log.Warn("Delivery target lost the states it was given (it restarted); re-asserting them")
			w.startReassert("the target lost its state")
		}
	}
}

// markUp records that the target answers (w.mu held); after an outage it is
// logged and every user's state re-asserted, as the target may have restarted
// and forgotten what it was told.
func (w *worker) markUp() {
	if w.st.Down {
		w.log.Info("Delivery target back", "pending", w.d.o.Outbox.Pending(w.t.Name()))
		if w.d.o.ReassertRate > 0 {
			w.startReassert("the target is back")
		}
	}
	w.st.Down = false
	w.backoff.Reset()
	w.st.BackoffUntil = time.Time{}
}

// markDown backs off the whole target after a failure that shows it is down
// (w.mu held), and logs the outage once.
func (w *worker) markDown(now time.Time, err error) {
	w.st.BackoffUntil = now.Add(w.backoff.Next())
	w.st.LastError = err.Error()
	if !w.st.Down {
		w.st.Down = true
		w.log.Error("Delivery target down; states wait in the outbox and are retried", "err", err.Error(), "retryIn", w.backoff.Current())
	}
}

// observe counts the latency of an item the target accepted at now: from the
// Teams change (Item.Queued) for a change, from the PBX's state for a state the
// PBX decided. Sync-all, stale, removals and re-assertions have no cause to
// measure from.
func (w *worker) observe(it Item, now time.Time) {
	switch it.Reason {
	case ReasonChange:
		w.changeLatency.Observe(now.Sub(it.Queued))
	case ReasonPBX:
		w.pbxLatency.Observe(now.Sub(it.Queued))
	}
}

// send hands one batch to the target and settles the outcome. Only one batch is
// in flight per target, so a user never has two states in flight.
func (w *worker) send(ctx context.Context, items []Item) {
	errs := w.t.Send(ctx, items)
	now := w.d.o.Clock.Now().UTC()
	delivered := func(it Item) Delivered {
		return Delivered{Target: w.t.Name(), UPN: it.User.UPN, User: it.User, Mapped: it.Mapped, State: it.State, PBX: it.PBX, Source: it.Source,
			Reason: it.Reason, Seq: it.Seq, Queued: it.Queued, At: now}
	}
	if ctx.Err() != nil {
		// Stopping: what the target accepted is recorded, so that a restart does
		// not send it again; the rest stays pending for the next run.
		var accepted []Delivered
		for i, it := range items {
			if i < len(errs) && errs[i] == nil {
				accepted = append(accepted, delivered(it))
				w.observe(it, now)
			}
		}
		if len(accepted) > 0 {
			if err := w.d.o.Outbox.Settle(w.t.Name(), accepted, nil); err != nil {
				w.log.Warn("Recording delivered states at stop failed; they are sent again after the restart", "err", err)
			}
		}
		return
	}
	var accepted []Delivered
	var dropped []Item
	failed, down := 0, false
	fresh := false // a user failed who had not failed before: evidence about the target
	var lastErr error
	for i, it := range items {
		var err error
		if i < len(errs) {
			err = errs[i]
		} else {
			err = errors.New("target gave no result for this item")
		}
		upn := it.User.UPN
		var perm *PermanentError
		switch {
		case err == nil:
			accepted = append(accepted, delivered(it))
			w.observe(it, now)
			delete(w.retryAt, upn)
			delete(w.userBackoff, upn)
		case errors.As(err, &perm):
			dropped = append(dropped, it)
			if w.logged[upn] != it.Seq {
				w.logged[upn] = it.Seq
				w.log.Warn("Target refused a state for good; dropped until the user's state changes", "upn", upn, "err", err.Error())
			}
		default:
			failed++
			lastErr = err
			down = down || errors.Is(err, ErrTargetDown)
			fresh = fresh || w.userBackoff[upn] == 0
			b := w.policy.Step(w.userBackoff[upn])
			w.userBackoff[upn] = b
			w.retryAt[upn] = now.Add(w.policy.Spread(b))
		}
	}
	var storeErr error
	if len(accepted)+len(dropped) > 0 {
		storeErr = w.d.o.Outbox.Settle(w.t.Name(), accepted, dropped)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.Sent += len(accepted)
	w.st.Dropped += len(dropped)
	w.st.Failed += failed
	if len(accepted) > 0 {
		w.st.LastOK = now
	}
	// The target is down when a batch fails as a whole (or with ErrTargetDown) and
	// it answered none of it. A batch in which the target accepted or refused some
	// items shows it is up: the users that failed back off on their own. So does a
	// batch of users that were already failing while others went through (a CTI
	// that answers 500 to one document), so they do not hold everyone back.
	answered := len(accepted)+len(dropped) > 0
	allFailed := failed > 0 && failed == len(items)
	switch {
	case (down || allFailed) && !answered && fresh:
		// The target, not a user, is the problem: back off the whole target and
		// let every held-back user go again, with a fresh back-off, when it ends.
		w.markDown(now, lastErr)
		for _, it := range items {
			delete(w.retryAt, it.User.UPN)
			delete(w.userBackoff, it.User.UPN)
		}
	case !answered:
		// Only users that were already failing failed again: their own back-off
		// holds them, and the target's state is unchanged.
		w.st.LastError = lastErr.Error()
	default:
		w.markUp()
		if lastErr != nil {
			w.st.LastError = lastErr.Error()
		} else if len(accepted) > 0 {
			w.st.LastError = ""
		}
	}
	// The target took the states but the state file did not record it: they stay
	// pending and would be sent again at once, so wait before the next batch.
	if storeErr != nil {
		if w.storeWait.Current() == 0 {
			w.log.Error("Recording delivered states in the state file failed; they stay queued and may be sent again", "err", storeErr.Error())
		}
		w.st.LastError = "record delivered states: " + storeErr.Error()
		if until := now.Add(w.storeWait.Next()); until.After(w.st.BackoffUntil) {
			w.st.BackoffUntil = until
		}
	} else if len(accepted)+len(dropped) > 0 {
		w.storeWait.Reset()
	}
}
