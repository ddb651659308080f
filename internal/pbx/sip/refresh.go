package sip

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/backoff"
)

// How often Run looks at the publications at least and at most, and how long it
// waits after a round with failures before trying again (10 s, doubling up to 5
// minutes while the rounds keep failing).
const (
	minRefreshWait = time.Second
	maxRefreshWait = time.Minute
)

var refreshRetry = backoff.Policy{Min: 10 * time.Second, Max: 5 * time.Minute}

// Run keeps the publications alive until ctx ends: each is refreshed when 80%
// of the lifetime the server granted has passed, with SIP-If-Match and no body
// (RFC 3903 section 4.2); a refused refresh publishes the last state afresh. A
// kept publication of an event package [SIP] Event no longer names is
// withdrawn (Expires: 0) at once.
func (p *Publisher) Run(ctx context.Context) error {
	retry := backoff.Backoff{Policy: refreshRetry}
	for {
		var after time.Duration // least wait: the retry's, after a round with failures
		if due, failed, err := p.refreshDue(ctx); failed > 0 && ctx.Err() == nil {
			after = retry.Next()
			p.log.Warn("Refreshing SIP publications failed; retrying", "due", due, "failed", failed, "retryIn", after, "err", err)
		} else {
			retry.Reset()
		}
		if err := p.sleep(ctx, p.untilDue(after)); err != nil {
			return nil
		}
	}
}

// life is the lifetime pub was granted.
func (p *Publisher) life(pub *Publication) time.Duration {
	if pub.Lifetime > 0 {
		return pub.Lifetime
	}
	return p.o.Expires
}

// dueAt is when k's publication pub should be refreshed: at 80% of its
// lifetime, or at once if it has no entity tag (a refused refresh left only
// its state) or is to be withdrawn.
func (p *Publisher) dueAt(k Key, pub *Publication) time.Time {
	if pub.ETag == "" || !p.publishes(k.Event) {
		return time.Time{}
	}
	return pub.Expires.Add(-p.life(pub) / 5)
}

// untilDue says how long Run may sleep, and sets the time from which a new
// publication due earlier wakes it.
func (p *Publisher) untilDue(atLeast time.Duration) time.Duration {
	now := p.o.Clock.Now()
	wait := maxRefreshWait
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pub := range p.pubs {
		wait = min(wait, p.dueAt(k, pub).Sub(now))
	}
	wait = max(wait, minRefreshWait, atLeast)
	p.nextLook = now.Add(wait)
	return wait
}

// sleep waits d on the clock, or less when keep signals an earlier due time.
func (p *Publisher) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-p.wake: // a signal from before the plan was made
	default:
	}
	t := p.o.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-p.wake:
	case <-ctx.Done():
	}
	return ctx.Err()
}

// refreshDue refreshes every publication that is due, Concurrency at a time, and
// returns how many were due, how many failed and the first failure. The first
// failure that says the server is down ends the round: the rest would only wait
// for their timeouts.
func (p *Publisher) refreshDue(ctx context.Context) (due, failed int, firstErr error) {
	now := p.o.Clock.Now()
	var keys []Key
	p.mu.Lock()
	for k, pub := range p.pubs {
		if !p.dueAt(k, pub).After(now) {
			keys = append(keys, k)
		}
	}
	p.mu.Unlock()
	if len(keys) == 0 {
		return 0, 0, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		n    atomic.Int64
		once sync.Once
	)
loop:
	for i, k := range keys {
		select {
		case p.sem <- struct{}{}:
		case <-rctx.Done():
			n.Add(int64(len(keys) - i))
			break loop
		}
		wg.Add(1)
		go func() {
			defer func() { <-p.sem; wg.Done() }()
			if _, err := p.refresh(rctx, k, false); err != nil {
				n.Add(1)
				once.Do(func() { firstErr = err })
				if errors.Is(err, delivery.ErrTargetDown) {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	p.flush()
	return len(keys), int(n.Load()), firstErr
}

// refresh renews k's publication if it is still due, or at once with now set.
// forgot is true when the server refused the publication's entity tag (it lost
// it) and the last state was published afresh. A publication of an event
// [SIP] Event no longer names is withdrawn instead.
func (p *Publisher) refresh(ctx context.Context, k Key, now bool) (forgot bool, err error) {
	defer p.lock(k)()
	pub := p.publication(k)
	at := p.o.Clock.Now()
	if pub == nil || !now && p.dueAt(k, pub).After(at) {
		return false, nil // removed or renewed meanwhile
	}
	var t sip.Uri
	if err := sip.ParseUri(k.URI, &t); err != nil {
		p.keep(k, nil)
		return false, nil
	}
	if !p.publishes(k.Event) {
		return false, p.remove(ctx, k, t)
	}
	if pub.ETag != "" && at.Before(pub.Expires) {
		res, err := p.transact(ctx, publishReq{key: k, target: t, ifMatch: pub.ETag, expires: p.o.Expires})
		if err != nil {
			return false, err
		}
		if res.IsSuccess() {
			p.keep(k, p.published(res, pub.Shows, pub.ETag, pub.Version))
			p.count(func(c *counts) { c.refreshed++ })
			return false, nil
		}
		if isAuthFailure(res) {
			return false, p.refused(k, res)
		}
		p.log.Debug("Refresh refused; publishing the last state afresh", "uri", k.URI, "event", k.Event, "status", res.StatusCode)
		forgot = true
	}
	if !pub.hasState() {
		p.keep(k, nil)
		return forgot, nil
	}
	lost := *pub
	lost.ETag = "" // dead: until the fresh PUBLISH succeeds only the state is left
	lost.Version = nextVersion(k, pub)
	p.keep(k, &lost)
	res, err := p.transact(ctx, publishReq{key: k, target: t, body: body(k, pub.Shows, lost.Version), expires: p.o.Expires})
	if err != nil {
		return forgot, err
	}
	if !res.IsSuccess() {
		err := p.refused(k, res)
		var perm *delivery.PermanentError
		if errors.As(err, &perm) {
			p.keep(k, nil)
		}
		return forgot, err
	}
	p.keep(k, p.published(res, pub.Shows, "", lost.Version))
	p.count(func(c *counts) { c.restarted++ })
	return forgot, nil
}

// Probe checks that the server is there and still holds the publications
// (delivery.Prober). It refreshes one publication now: a server that refuses its
// entity tag has lost it (it restarted with an empty presentity table), and most
// likely the others too, so Probe returns delivery.ErrTargetForgot and the
// dispatcher re-asserts every user. Without publications it sends OPTIONS.
func (p *Publisher) Probe(ctx context.Context) error {
	var k Key
	p.mu.Lock()
	for key, pub := range p.pubs {
		if pub.ETag != "" && p.publishes(key.Event) {
			k = key
			break
		}
	}
	p.mu.Unlock()
	if k.URI == "" {
		_, err := p.Ping(ctx)
		return err
	}
	forgot, err := p.refresh(ctx, k, true)
	p.flush()
	if err == nil && forgot {
		return delivery.ErrTargetForgot
	}
	return err
}
