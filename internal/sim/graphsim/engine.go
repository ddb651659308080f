package graphsim

import (
	"context"
	"math/rand/v2"
	"time"
)

// The pattern engine's states. Their order is the order they are interned in the
// pair table, so a state number is also its pair index.
const (
	stAvailable = iota
	stInACall
	stInAConferenceCall
	stInAMeeting
	stPresenting
	stAway
	stBeRightBack
	stAvailableIdle
	stBusyIdle
	stOffWork
	stOutOfOffice
	numEngineStates
)

// enginePairs are the realistic (availability, activity) pairs Teams shows, as
// listed in the presence resource page and seen in the vendor guides: idle states
// appear when the Teams client goes quiet and decay to Offline (seed 000_*).
var enginePairs = [numEngineStates][2]string{
	stAvailable:         {"Available", "Available"},
	stInACall:           {"Busy", "InACall"},
	stInAConferenceCall: {"Busy", "InAConferenceCall"},
	stInAMeeting:        {"Busy", "InAMeeting"},
	stPresenting:        {"DoNotDisturb", "Presenting"},
	stAway:              {"Away", "Away"},
	stBeRightBack:       {"BeRightBack", "BeRightBack"},
	stAvailableIdle:     {"AvailableIdle", "Available"},
	stBusyIdle:          {"BusyIdle", "Busy"},
	stOffWork:           {"Offline", "OffWork"},
	stOutOfOffice:       {"Offline", "OutOfOffice"},
}

type weighted struct {
	to     uint32
	weight int
}

// transitions gives, per state, where a user goes next and how likely that is.
// No state leads to itself, so every step of the engine is a visible change.
var transitions = [numEngineStates][]weighted{
	stAvailable: {{stInACall, 30}, {stInAConferenceCall, 8}, {stInAMeeting, 20}, {stPresenting, 3},
		{stAway, 10}, {stBeRightBack, 8}, {stAvailableIdle, 12}, {stOffWork, 8}, {stOutOfOffice, 1}},
	stInACall:           {{stAvailable, 75}, {stInAMeeting, 10}, {stBusyIdle, 5}, {stAway, 5}, {stOffWork, 5}},
	stInAConferenceCall: {{stAvailable, 75}, {stInACall, 10}, {stBusyIdle, 5}, {stAway, 5}, {stOffWork, 5}},
	stInAMeeting:        {{stAvailable, 65}, {stInACall, 10}, {stPresenting, 10}, {stBusyIdle, 10}, {stOffWork, 5}},
	stPresenting:        {{stAvailable, 70}, {stInAMeeting, 30}},
	stAway:              {{stAvailable, 60}, {stOffWork, 25}, {stAvailableIdle, 15}},
	stBeRightBack:       {{stAvailable, 85}, {stAway, 15}},
	stAvailableIdle:     {{stOffWork, 60}, {stAvailable, 40}},
	stBusyIdle:          {{stOffWork, 60}, {stAvailable, 20}, {stInAMeeting, 20}},
	stOffWork:           {{stAvailable, 95}, {stOutOfOffice, 5}},
	stOutOfOffice:       {{stOffWork, 50}, {stAvailable, 50}},
}

// initialWeights spread users over states at start: a working day's snapshot.
var initialWeights = []weighted{{stAvailable, 45}, {stInACall, 8}, {stInAMeeting, 10}, {stAway, 7},
	{stBeRightBack, 2}, {stAvailableIdle, 5}, {stBusyIdle, 1}, {stOffWork, 20}, {stOutOfOffice, 2}}

func pick(r *rand.Rand, ws []weighted) uint32 {
	total := 0
	for _, w := range ws {
		total += w.weight
	}
	n := r.IntN(total)
	for _, w := range ws {
		if n < w.weight {
			return w.to
		}
		n -= w.weight
	}
	return ws[len(ws)-1].to
}

// engine is the background presence pattern: every step it moves, on average,
// ChangesPerUserPerHour × users × step-length changes of the users' own (Teams
// client) state over random users. One goroutine and a few words of state,
// whatever the number of users. The caller (Server) holds the directory's
// changeMu while it runs.
type engine struct {
	rate  float64 // changes per user per hour
	rng   *rand.Rand
	carry float64 // fractional changes owed from earlier steps
}

// step applies the changes due for a step of length d, stamped with at, and
// returns how many of them Graph shows (an application's session can outrank a
// user's new client state; see aggregate).
func (e *engine) step(d *directory, dur time.Duration, at int64) int {
	n := len(d.users)
	if e.rate <= 0 || n == 0 || dur <= 0 {
		return 0
	}
	e.carry += e.rate * float64(n) * dur.Hours()
	due := int(e.carry)
	e.carry -= float64(due)
	// A clock jumping by days must not stall the server: cap the work per step.
	if limit := 10 * n; due > limit {
		due = limit
	}
	changed := 0
	for range due {
		u := int32(e.rng.IntN(n))
		cur := d.client[u]
		row := transitions[stAvailable]
		if cur < numEngineStates {
			row = transitions[cur]
		}
		if d.setClient(u, pick(e.rng, row), at) {
			changed++
		}
	}
	return changed
}

// Step advances the presence pattern engine by d of simulated time and returns how
// many presence changes it made that Graph shows. The engine goroutine calls it
// every EngineTick with the time elapsed on Options.Clock; tests call it directly
// (with ManualEngine) so they never sleep. Changes are stamped with
// Options.Clock.Now(); sessions that expired by then are ended first.
func (s *Server) Step(d time.Duration) int {
	s.dir.changeMu.Lock()
	defer s.dir.changeMu.Unlock()
	at := s.clock.Now().UnixNano()
	s.dir.expireLocked(at)
	return s.engine.step(s.dir, d, at)
}

// runEngine paces the engine on a real ticker and feeds it the time elapsed on the
// injected clock, so a fake clock drives it only when the test advances it.
// last is the clock reading at Start.
func (s *Server) runEngine(ctx context.Context, last time.Time) {
	t := time.NewTicker(s.opts.EngineTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := s.clock.Now()
			if d := now.Sub(last); d > 0 {
				s.Step(d)
				last = now
			}
		}
	}
}
