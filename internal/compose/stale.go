package compose

import (
	"context"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/store"
)

// Reading is how an account's reading of Teams goes: when its last cycle that
// read every user ended (zero: none yet), and the last error.
type Reading func() (lastGood time.Time, lastErr string)

// Watched is an account the stale policy watches.
type Watched struct {
	Group
	Reading Reading
}

// RunStale applies [Delivery] StaleAfter until ctx ends: an account that has not
// read Teams for after has its users shown as the Stale rule; its first good read
// after that queues their live states again. started is when the service began
// (an account that has not read yet counts from then).
func (c *Composer) RunStale(ctx context.Context, after time.Duration, started time.Time, accounts []Watched) error {
	tick := min(max(after/4, time.Second), 15*time.Second)
	for {
		c.checkStale(ctx, after, started, accounts)
		if err := c.o.Clock.Sleep(ctx, tick); err != nil {
			return nil
		}
	}
}

func (c *Composer) checkStale(ctx context.Context, after time.Duration, started time.Time, accounts []Watched) {
	now := c.o.Clock.Now()
	for _, acc := range accounts {
		if len(acc.Users) == 0 {
			continue
		}
		lastGood, lastErr := acc.Reading()
		since := c.StaleSince(acc.Account)
		last := lastGood
		if last.IsZero() || last.Before(started) && !since.IsZero() {
			last = started
		}
		switch {
		case since.IsZero() && now.Sub(last) > after:
			if err := c.setStale(acc.Account, now.UTC()); err != nil {
				c.o.Logger.Error("Keeping the stale episode in the state file failed; a restart forgets it", "account", acc.Account, "err", err)
			}
			c.o.Logger.Warn("Account has not read presence for too long; its users are shown as stale on the PBX",
				"account", acc.Account, "lastGoodRead", lastGood, "staleAfter", after, "cause", lastErr)
			c.queueAccount(ctx, acc.Group, delivery.ReasonStale)
		case !since.IsZero() && lastGood.After(since):
			if err := c.setStale(acc.Account, time.Time{}); err != nil {
				c.o.Logger.Error("Ending the stale episode in the state file failed", "account", acc.Account, "err", err)
			}
			c.o.Logger.Info("Account reads presence again; its users' live states are sent", "account", acc.Account)
			c.queueAccount(ctx, acc.Group, delivery.ReasonSync)
		}
	}
}

// setStale begins (since set) or ends (zero) the account's stale episode.
func (c *Composer) setStale(account string, since time.Time) error {
	c.mu.Lock()
	if since.IsZero() {
		delete(c.stale, account)
	} else {
		c.stale[account] = since
	}
	c.mu.Unlock()
	if since.IsZero() {
		return c.o.Store.Delete(store.BucketStale, account)
	}
	return c.o.Store.Put(store.BucketStale, account, since)
}

// queueAccount queues every user of g: the Stale rule, or the last state read.
func (c *Composer) queueAccount(ctx context.Context, g Group, reason string) {
	now := c.o.Clock.Now().UTC()
	items := make([]delivery.Item, 0, len(g.Users))
	for _, u := range g.Users {
		st, found, err := c.o.States.Last(u.UPN)
		switch {
		case err != nil:
			c.o.Logger.Error("Reading a kept state failed; the user is left out", "upn", u.UPN, "err", err)
			continue
		case !found && reason != delivery.ReasonStale:
			continue
		}
		items = append(items, c.item(u, st, reason, now, reason == delivery.ReasonStale))
	}
	if err := c.o.Queue.Enqueue(ctx, items); err != nil {
		c.o.Logger.Error("Queueing states failed", "account", g.Account, "err", err)
	}
}
