package simulate

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// ArrivalsPath is the PBX side's endpoint (on the --pbx address) that tells
// what arrived at the PBX side and which of the tenant's changes each arrival
// shows, on the one clock of this process: GET ArrivalsPath[?since=RFC3339Nano]
// answers Arrivals. `bench latency` reads it.
const ArrivalsPath = "/_sim/arrivals"

// The targets of an Arrival.
const (
	TargetHTTP = "http" // a document at the CTI receiver (--pbx)
	TargetSIP  = "sip"  // a NOTIFY at a watcher of Kamailio (--kamailio N)
)

// How an Arrival matched the tenant's changes (Arrival.Match).
const (
	MatchChange = "change" // ChangeAt is the change whose state arrived
	MatchStart  = "start"  // the user's state when the tenant started, which no change made
	MatchNone   = "none"   // no recent state of the user: a fault on the way
)

// Arrival is one state that arrived at the PBX side.
type Arrival struct {
	Target string `json:"target"` // TargetHTTP or TargetSIP
	UPN    string `json:"upn"`
	// At is when it arrived: the CTI receiver read the document (before it
	// answered 204), or the watcher read the NOTIFY.
	At time.Time `json:"at"`
	// ChangeAt is when the tenant made the change whose state arrived: the
	// latest change of the user, at or before At, to what arrived (for HTTP the
	// document's Teams availability and activity; for SIP the NOTIFY's PIDF
	// basic status, activity and note, which the default [Mapping] gives for
	// that Teams state). Set when Match is MatchChange.
	ChangeAt time.Time `json:"changeAt,omitzero"`
	Match    string    `json:"match"`
}

// FirstArrivals is, for one target, how many users have had a Teams state
// arrive (MatchChange or MatchStart) and when the last of them had their
// first: with every user counted, the end of a cold start.
type FirstArrivals struct {
	Users int       `json:"users"`
	Last  time.Time `json:"last,omitzero"`
	// Unmatched counts the arrivals so far that showed no recent Teams state
	// of their user (MatchNone), such as the [Mapping] Stale rule's.
	Unmatched int `json:"unmatched,omitempty"`
}

// Arrivals is what ArrivalsPath answers: the first arrivals by target, and,
// when the request gives since, the arrivals at or after since in the order
// they were recorded.
type Arrivals struct {
	Now      time.Time                `json:"now"`
	First    map[string]FirstArrivals `json:"first"`
	Arrivals []Arrival                `json:"arrivals,omitempty"`
}

// keepChanges is how many of each user's latest changes the arrival log keeps
// to match arrivals against: a state that arrives is one of the user's last
// few, unless delivery has fallen hopelessly behind.
const keepChanges = 16

// change is one change of the tenant, as the arrival log keeps it.
type change struct {
	availability, activity string
	at                     time.Time
}

// arrivalLog matches what arrives at the PBX side with the tenant's changes.
// It follows the tenant's change record (graphsim.Server.Changes) a little at
// a time, as arrivals need it, and keeps each user's latest changes, so a
// match costs a map lookup, not a scan of the record, whatever the number of
// users (a cold start delivers every user at once).
type arrivalLog struct {
	sim *graphsim.Server

	mu       sync.Mutex
	seen     time.Time                  // the newest change fetched
	recent   map[string][]change        // by UPN: its latest changes, oldest first
	initial  map[string][2]string       // by UPN: its state when the tenant started
	sipShows map[[2]string]string       // Teams state -> what the PIDF shows (sipKey)
	arrivals []Arrival                  // in the order recorded
	firsts   map[string]map[string]bool // target -> UPNs arrived
	first    map[string]FirstArrivals
}

// newArrivalLog keeps the state of every user of sim as it is now: call it
// before the tenant starts, so no change precedes it.
func newArrivalLog(sim *graphsim.Server) *arrivalLog {
	us := sim.Users()
	l := &arrivalLog{sim: sim, recent: make(map[string][]change, len(us)), initial: make(map[string][2]string, len(us)),
		sipShows: map[[2]string]string{}, firsts: map[string]map[string]bool{}, first: map[string]FirstArrivals{}}
	for _, u := range us {
		av, act, _ := sim.Presence(u.UPN)
		l.initial[u.UPN] = [2]string{av, act}
	}
	return l
}

// pairMatch matches a Teams state (availability, activity), case aside: what
// a CTI document carries.
func pairMatch(availability, activity string) func(av, act string) bool {
	return func(av, act string) bool {
		return strings.EqualFold(av, availability) && strings.EqualFold(act, activity)
	}
}

// sipKey is what a PIDF shows: basic status, RPID activities and note.
func sipKey(basic string, activities []string, note string) string {
	return basic + "|" + strings.Join(activities, ",") + "|" + note
}

// sipMatch matches the Teams states whose PIDF, under the default [Mapping],
// shows what the NOTIFY n showed.
func (l *arrivalLog) sipMatch(basic string, activities []string, note string) func(av, act string) bool {
	want := sipKey(basic, activities, note)
	return func(av, act string) bool { return l.sipShowsLocked(av, act) == want }
}

// sipShowsLocked is sipKey of the PIDF the default [Mapping] gives for the
// Teams state av/act (Graph's outOfOfficeSettings are on with the activity
// OutOfOffice in the simulated tenant); l.mu held.
func (l *arrivalLog) sipShowsLocked(av, act string) string {
	k := [2]string{av, act}
	if s, ok := l.sipShows[k]; ok {
		return s
	}
	a, _ := presence.ParseAvailability(av)
	ac, _ := presence.ParseActivity(act)
	m := presence.DefaultMapping().Map(presence.State{Availability: a, Activity: ac, OutOfOffice: strings.EqualFold(act, "OutOfOffice")})
	var acts []string
	if m.Activity != "" {
		acts = []string{m.Activity}
	}
	s := sipKey(m.Basic, acts, m.Note)
	l.sipShows[k] = s
	return s
}

// followLocked fetches the changes the tenant made since the last call; l.mu
// held. The engine stamps all changes of one step at once, under the lock
// Changes takes too, so "after the newest fetched" misses none.
func (l *arrivalLog) followLocked() {
	for _, c := range l.sim.Changes(l.seen) {
		r := append(l.recent[c.UPN], change{c.Availability, c.Activity, c.At})
		if len(r) > keepChanges {
			r = append(r[:0], r[len(r)-keepChanges:]...)
		}
		l.recent[c.UPN] = r
		l.seen = c.At
	}
}

// record notes that a state arrived for upn at at over target, matches it
// with the tenant's changes (shows tells which Teams states give what
// arrived), and returns the arrival and the Teams state it was matched to
// (empty with MatchNone).
func (l *arrivalLog) record(target, upn string, at time.Time, shows func(av, act string) bool) (Arrival, [2]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.followLocked()
	a := Arrival{Target: target, UPN: upn, At: at, Match: MatchNone}
	var pair [2]string
	r := l.recent[upn]
	for i := len(r) - 1; i >= 0; i-- {
		if !r[i].at.After(at) && shows(r[i].availability, r[i].activity) {
			a.Match, a.ChangeAt, pair = MatchChange, r[i].at, [2]string{r[i].availability, r[i].activity}
			break
		}
	}
	if init, ok := l.initial[upn]; ok && a.Match == MatchNone && shows(init[0], init[1]) {
		a.Match, pair = MatchStart, init
	}
	l.arrivals = append(l.arrivals, a)
	if a.Match == MatchNone {
		f := l.first[target]
		f.Unmatched++
		l.first[target] = f
		return a, pair // not a Teams state (e.g. the Stale rule's): no first state
	}
	seen := l.firsts[target]
	if seen == nil {
		seen = map[string]bool{}
		l.firsts[target] = seen
	}
	if !seen[upn] {
		seen[upn] = true
		f := l.first[target]
		f.Users, f.Last = len(seen), at
		l.first[target] = f
	}
	return a, pair
}

// lastChange is when the tenant last changed upn to availability/activity, at
// or before at and within 10 minutes (zero: not found), for the printed lines.
func (l *arrivalLog) lastChange(upn, availability, activity string, at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.followLocked()
	r := l.recent[upn]
	for i := len(r) - 1; i >= 0; i-- {
		if !r[i].at.After(at) && strings.EqualFold(r[i].availability, availability) && strings.EqualFold(r[i].activity, activity) {
			if at.Sub(r[i].at) < 10*time.Minute {
				return r[i].at
			}
			break
		}
	}
	return time.Time{}
}

// serve answers GET ArrivalsPath[?since=RFC3339Nano].
func (l *arrivalLog) serve(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	v := r.URL.Query().Get("since")
	if v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			http.Error(w, fmt.Sprintf("since=%q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05.999Z)", v), http.StatusBadRequest)
			return
		}
		since = t
	}
	l.mu.Lock()
	out := Arrivals{Now: time.Now().UTC(), First: make(map[string]FirstArrivals, len(l.first))}
	for t, f := range l.first {
		out.First[t] = f
	}
	if v != "" {
		out.Arrivals = []Arrival{}
		for _, a := range l.arrivals {
			if !a.At.Before(since) {
				out.Arrivals = append(out.Arrivals, a)
			}
		}
	}
	l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
