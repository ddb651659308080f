package delivery

import (
	"time"

	"github.com/presencebridge/presencebridge/internal/users"
)

// Outbox keeps delivery's state: per target and user, the newest state not yet
// accepted (pending) and the last one the target accepted (delivered). Only the
// newest pending state of a user is kept: a newer one replaces it (coalescing).
// BoltOutbox keeps it in the state file, so a restart or a long PBX outage loses
// nothing; MemOutbox keeps it in memory, for tests. The two pass the same suite.
//
// Invariants every implementation keeps: a target's Seq grows with every state
// queued for it, so a later Seq is always a newer state; nothing leaves the
// pending set before the target accepted or refused it (Settle), and Settle
// removes a pending state only if no newer one replaced it meanwhile.
type Outbox interface {
	// Enqueue stores items for every target in one step, each with the target's
	// next Seq, replacing the users' pending items. accepts[i] (nil: everyone)
	// says which users targets[i] takes.
	Enqueue(targets []string, accepts []func(users.User) bool, items []Item) error
	// Pick returns up to n pending items of target for which want(upn) is true,
	// in UPN order after the UPN after ("": from the start), going round to the
	// start again, so users late in the order are not starved by users whose
	// state keeps changing. last is the UPN of the last item taken, for the next
	// Pick to start after.
	Pick(target string, n int, after string, want func(upn string) bool) (items []Item, last string, err error)
	// Settle records the outcome of one Send in one step: accepted states are
	// removed from the pending set unless a newer one replaced them meanwhile
	// (their Seq no longer matches) and are remembered as delivered; dropped
	// (refused for good) items are removed the same way.
	Settle(target string, accepted []Delivered, dropped []Item) error
	// Pending counts target's pending items.
	Pending(target string) int
	// HasPending reports whether target has a pending item for upn.
	HasPending(target, upn string) bool
	// Delivered is what target last accepted for upn.
	Delivered(target, upn string) (Delivered, bool, error)
	// DeliveredAfter returns up to n of target's delivered states that are not
	// removals and were accepted by before, in UPN order after the UPN after,
	// skipping users with a pending state (it goes out anyway, and is newer);
	// and the last UPN read, for the next call.
	DeliveredAfter(target, after string, n int, before time.Time) (ds []Delivered, last string, err error)
	// CountDelivered counts target's delivered states (removals included).
	CountDelivered(target string) int
	// Shown returns, by UPN, what a target last accepted for each user the PBX
	// shows: users whose last delivery (to any target) was not a removal.
	Shown() (map[string]Delivered, error)
}
