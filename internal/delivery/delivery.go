// Package delivery hands each user's state to the targets, durably. A Dispatcher
// takes the items compose built and queues the newest state of each user for
// every Target in the outbox (bbolt); one worker per target sends, backs off while
// the target is down, and never sends a superseded state after a newer one. An
// item leaves the outbox only once its target accepted it.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Reasons an Item is queued.
const (
	ReasonChange = "change" // Graph reported a new state
	ReasonSync   = "sync"   // sync-all, or a first sighting
	ReasonStale  = "stale"  // the account could not read presence for too long
	ReasonRemove = "remove" // the user left the users file
	ReasonPBX    = "pbx"    // the PBX's own state of the user changed what is shown (WinningTechnology)
)

// Item is one user's state for one target: the newest not yet accepted.
type Item struct {
	User   users.User      `json:"user"`
	State  presence.State  `json:"state"`  // the Teams state (zero for a removal)
	Mapped presence.Mapped `json:"mapped"` // what the PBX should show
	// PBX is the PBX's own state of the user (zero where it is not watched), and
	// Source which of the two Mapped shows: SourceTeams or SourcePBX
	// (RichPresence.WinningTechnology decides); empty is Teams (version 1
	// records, items made before the PBX was an input).
	PBX    presence.PBXState `json:"pbx"`
	Source string            `json:"source"`
	Reason string            `json:"reason"`
	// Seq orders the items of one target; a later Seq is always a newer state.
	Seq uint64 `json:"seq"`
	// Queued is when the state was queued (the change's time, for latency figures).
	Queued time.Time `json:"queued"`
}

// Sources of what an item shows.
const (
	SourceTeams = "teams"
	SourcePBX   = "pbx"
)

// Remove reports whether the item withdraws the user's state from the PBX.
func (it Item) Remove() bool { return it.Reason == ReasonRemove }

// Target is one PBX or CTI endpoint.
type Target interface {
	// Name identifies the target in logs, status and the outbox ("sip", "http").
	Name() string
	// Send delivers items, at most one per user, and returns one error per item,
	// in order: nil when the target accepted it. Send may send concurrently but must
	// return only when every item is settled. An error that wraps ErrTargetDown says
	// the target itself is unreachable, so the dispatcher backs off the whole target.
	Send(ctx context.Context, items []Item) []error
	// Close releases connections; queued items stay in the outbox.
	Close() error
}

// Accepter is implemented by targets that serve only some users (SIP needs a SIP
// URI); states of other users are not queued for them.
type Accepter interface {
	Accepts(u users.User) bool
}

// Reasserter is a target that can re-assert states it accepted before more
// cheaply than by sending them again (SIP: a refresh, and a fresh PUBLISH only
// where the server lost the publication). The dispatcher re-asserts every user's
// last accepted state when it starts and when the target is back after being
// down, because a PBX that restarted meanwhile may have lost what it was told;
// a target without Reassert gets the states sent again (reason sync).
type Reasserter interface {
	Reassert(ctx context.Context, items []Item) []error
}

// Prober is a target that can check, when idle, that it is reachable and still
// holds what it was told. Probe returns an error wrapping ErrTargetDown when it is
// unreachable, ErrTargetForgot when it lost its state (the dispatcher then
// re-asserts every user).
type Prober interface {
	Probe(ctx context.Context) error
}

// ErrTargetForgot says the target no longer holds the states it accepted (a PBX
// that restarted with empty tables).
var ErrTargetForgot = errors.New("the target lost the states it was given")

// ErrTargetDown marks errors that mean the whole target is unreachable (connection
// refused, timeout, 5xx for every request) rather than one user being refused.
var ErrTargetDown = errors.New("target unreachable")

// PermanentError marks an item the target will never accept as it is (e.g. a 404 for
// an unknown SIP URI, a 400 for a bad document). It is logged once and dropped from
// the outbox until the user's state changes again.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError.
func Permanent(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// Delivered is what a target last accepted for a user.
type Delivered struct {
	Target string            `json:"target"`
	UPN    string            `json:"upn"`
	User   users.User        `json:"user"`
	Mapped presence.Mapped   `json:"mapped"`
	State  presence.State    `json:"state"`
	PBX    presence.PBXState `json:"pbx"`
	Source string            `json:"source"`
	Reason string            `json:"reason"`
	Seq    uint64            `json:"seq"`
	Queued time.Time         `json:"queued"`
	At     time.Time         `json:"at"` // when the target accepted it
}
