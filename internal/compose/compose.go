// Package compose is the stage between the Teams side and delivery: from each
// user's inputs it decides what the PBX is shown, and queues it for every target.
// Today the one input is the user's Teams state, shown through the [Mapping]
// table, or the table's Stale rule while the user's account cannot read Teams.
// The PBX's own state (calls seen on the PBX) and RichPresence.WinningTechnology
// are combined here next.
//
// Every delivery.Item is built here, from one mapping table: the poller's changes,
// sync-all, and the stale policy's fallback and recovery.
package compose

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Queue takes composed items for delivery (delivery.Dispatcher).
type Queue interface {
	Enqueue(ctx context.Context, items []delivery.Item) error
}

// States gives the last Teams state kept for a user (the poller's, poll.Kept).
type States interface {
	Last(upn string) (presence.State, bool, error)
}

// Options configure a Composer.
type Options struct {
	Mapping *presence.Mapping // the [Mapping] table
	Queue   Queue
	States  States
	// Store keeps the accounts' stale episodes (store.BucketStale, owned here),
	// so that a restart during an outage still sends live states once Teams
	// can be read again.
	Store  *store.DB
	Clock  clock.Clock
	Logger *slog.Logger
}

// Composer turns users' inputs into what the PBX is shown.
type Composer struct {
	o Options

	mu    sync.Mutex
	stale map[string]time.Time // account id -> start of its stale episode
}

// New builds a Composer and reads the stale episodes kept in the state file.
func New(o Options) (*Composer, error) {
	c := &Composer{o: o, stale: map[string]time.Time{}}
	err := o.Store.ForEach(store.BucketStale, func(account string, raw []byte) error {
		var since time.Time
		if err := since.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("stale episode of account %s: %w", account, err)
		}
		c.stale[account] = since
		return nil
	})
	return c, err
}

// item is what u is shown for the Teams state st, queued for reason at now.
func (c *Composer) item(u users.User, st presence.State, reason string, now time.Time) delivery.Item {
	m := c.o.Mapping.Map(st)
	if reason == delivery.ReasonStale {
		m = c.o.Mapping.Stale()
	}
	return delivery.Item{User: u, State: st, Mapped: m, Reason: reason, Queued: now}
}

// Deliver composes the poller's changes and queues them (poll.Sink). A change
// is queued as of when it was seen.
func (c *Composer) Deliver(ctx context.Context, changes []presence.Change) error {
	items := make([]delivery.Item, 0, len(changes))
	now := c.o.Clock.Now().UTC()
	for _, ch := range changes {
		at := ch.Current.Changed
		if at.IsZero() {
			at = now
		}
		items = append(items, c.item(ch.User, ch.Current, delivery.ReasonChange, at))
	}
	return c.o.Queue.Enqueue(ctx, items)
}

// Group is one account's users.
type Group struct {
	Account string
	Users   []users.User
}

// SyncReport is what sync-all did.
type SyncReport struct {
	Users   int      `json:"users"`   // users in the users file with an account
	Queued  int      `json:"queued"`  // states queued for every target
	NoState int      `json:"noState"` // users whose presence has not been read yet
	Targets []string `json:"targets"`
}

// Sync queues every user's current state (the Stale rule for an account that is
// stale) for every target, whether it changed or not (sync-all).
func (c *Composer) Sync(ctx context.Context, groups []Group) (SyncReport, error) {
	var rep SyncReport
	var items []delivery.Item
	now := c.o.Clock.Now().UTC()
	for _, g := range groups {
		reason := delivery.ReasonSync
		stale := c.StaleSince(g.Account)
		for _, u := range g.Users {
			rep.Users++
			st, found, err := c.o.States.Last(u.UPN)
			if err != nil {
				return rep, err
			}
			if !found {
				rep.NoState++
				continue
			}
			it := c.item(u, st, reason, now)
			if !stale.IsZero() {
				it.Mapped = c.o.Mapping.Stale()
			}
			items = append(items, it)
		}
	}
	rep.Queued = len(items)
	if err := c.o.Queue.Enqueue(ctx, items); err != nil {
		return rep, err
	}
	c.o.Logger.Info("Sync all: every user's state queued for every target", "queued", rep.Queued, "noStateYet", rep.NoState)
	return rep, nil
}

// StaleSince is when the account's users began to be shown as stale; zero when
// they are live.
func (c *Composer) StaleSince(account string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stale[account]
}
