// Package compose is the stage between the two sides: from each user's inputs
// it decides what the PBX is shown, and queues it for every target; and it hands
// the PBX's own states to the writers that show calls in Teams.
//
// The inputs are the user's Teams state, shown through the [Mapping] table (or
// the table's Stale rule while the user's account cannot read Teams), and, where
// the PBX is watched, the PBX's own state (a call, ringing, DND or away set on
// the phone). RichPresence.WinningTechnology decides between them: TeamsWins
// (MSTeams) shows Teams, and the PBX's state only where Teams has none (never
// read, unknown, or the account stale); PBXWins (SipSimple, the legacy default)
// shows the PBX's state wherever it says more than idle, and Teams otherwise.
// With no PBX watched, Teams is shown, as before there was a choice.
//
// Every delivery.Item is built here, from one mapping table: the poller's changes,
// the PBX's changes, sync-all, and the stale policy's fallback and recovery.
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

// Writer shows PBX states in Teams for one account (write.Writer).
type Writer interface {
	Apply(changes []presence.PBXChange)
}

// WinningTechnology values (config's RichPresence.WinningTechnology).
const (
	TeamsWins = "MSTeams"
	PBXWins   = "SipSimple"
)

// Options configure a Composer.
type Options struct {
	Mapping *presence.Mapping // the [Mapping] table
	Queue   Queue
	States  States
	// Winning is TeamsWins or PBXWins (empty: TeamsWins).
	Winning string
	// Writers show the PBX's states in Teams, by account id; an account without
	// one only reads Teams.
	Writers map[string]Writer
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
	stale map[string]time.Time         // account id -> start of its stale episode
	pbx   map[string]presence.PBXState // UPN -> the PBX's own state, where watched
}

// New builds a Composer and reads the stale episodes kept in the state file.
func New(o Options) (*Composer, error) {
	c := &Composer{o: o, stale: map[string]time.Time{}, pbx: map[string]presence.PBXState{}}
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

// item is what u is shown for the Teams state st (zero: none read yet) and the
// PBX's state, queued for reason at now; stale: u's account cannot read Teams.
func (c *Composer) item(u users.User, st presence.State, reason string, now time.Time, stale bool) delivery.Item {
	it := delivery.Item{User: u, State: st, Reason: reason, Queued: now, Source: delivery.SourceTeams}
	c.mu.Lock()
	it.PBX = c.pbx[u.UPN]
	c.mu.Unlock()
	switch {
	case c.pbxWins(it.PBX, st, stale):
		it.Mapped, it.Source = c.o.Mapping.Map(AsTeams(it.PBX)), delivery.SourcePBX
	case stale || reason == delivery.ReasonStale:
		it.Mapped = c.o.Mapping.Stale()
	default:
		it.Mapped = c.o.Mapping.Map(st)
	}
	return it
}

// pbxWins reports whether u is shown the PBX's state p rather than the Teams
// state st (WinningTechnology).
func (c *Composer) pbxWins(p presence.PBXState, st presence.State, stale bool) bool {
	if !p.Says() {
		return false // idle or unknown: Teams, whatever it says
	}
	if c.o.Winning == PBXWins {
		return true
	}
	return stale || st.UPN == "" || st.Availability == presence.PresenceUnknown
}

// AsTeams is the PBX's state in Teams' words, for the [Mapping] table: a call
// or a ringing line is Busy/InACall, DND on the phone DoNotDisturb, away Away.
func AsTeams(p presence.PBXState) presence.State {
	st := presence.State{UPN: p.UPN, Seen: p.Changed, Changed: p.Changed}
	switch {
	case p.Line == presence.LineInCall || p.Line == presence.LineRinging:
		st.Availability, st.Activity = presence.Busy, presence.ActInACall
	case p.DND:
		st.Availability, st.Activity = presence.DoNotDisturb, presence.ActDoNotDisturb
	case p.Away:
		st.Availability, st.Activity = presence.Away, presence.ActAway
	default:
		st.Availability, st.Activity = presence.Available, presence.ActAvailable
	}
	return st
}

// DeliverPBX takes the PBX watch's changes: each account's writer is handed its
// users', and a user whose shown state changes with them (WinningTechnology) is
// queued for every target.
func (c *Composer) DeliverPBX(ctx context.Context, changes []presence.PBXChange) error {
	byAccount := map[string][]presence.PBXChange{}
	var items []delivery.Item
	for _, ch := range changes {
		byAccount[ch.User.Account] = append(byAccount[ch.User.Account], ch)
		c.mu.Lock()
		if ch.Current.Known() {
			c.pbx[ch.User.UPN] = ch.Current
		} else {
			delete(c.pbx, ch.User.UPN)
		}
		c.mu.Unlock()
		st, found, err := c.o.States.Last(ch.User.UPN)
		if err != nil {
			return err
		}
		if !found {
			st = presence.State{}
		}
		stale := !c.StaleSince(ch.User.Account).IsZero()
		if !c.pbxWins(ch.Previous, st, stale) && !c.pbxWins(ch.Current, st, stale) {
			continue // Teams was shown and still is
		}
		at := ch.Current.Changed
		if at.IsZero() {
			at = c.o.Clock.Now().UTC()
		}
		items = append(items, c.item(ch.User, st, delivery.ReasonPBX, at, stale))
	}
	for account, chs := range byAccount {
		if w := c.o.Writers[account]; w != nil {
			w.Apply(chs)
		}
	}
	return c.o.Queue.Enqueue(ctx, items)
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
		items = append(items, c.item(ch.User, ch.Current, delivery.ReasonChange, at, false))
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
			items = append(items, c.item(u, st, reason, now, !stale.IsZero()))
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
