// Package presence is presencebridge's model of a Teams user's presence: the values
// Graph reports, parsed leniently, and the normalised State kept per user.
package presence

import (
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/users"
)

// Availability is the base presence of a user as Graph reports it.
// Values: https://learn.microsoft.com/graph/api/resources/presence
type Availability string

// Availability values.
const (
	Available       Availability = "Available"
	AvailableIdle   Availability = "AvailableIdle"
	Away            Availability = "Away"
	BeRightBack     Availability = "BeRightBack"
	Busy            Availability = "Busy"
	BusyIdle        Availability = "BusyIdle"
	DoNotDisturb    Availability = "DoNotDisturb"
	Offline         Availability = "Offline"
	PresenceUnknown Availability = "PresenceUnknown"
)

// Activity is the supplemental information to an Availability.
type Activity string

// Activity values.
const (
	ActAvailable               Activity = "Available"
	ActAway                    Activity = "Away"
	ActBeRightBack             Activity = "BeRightBack"
	ActBusy                    Activity = "Busy"
	ActDoNotDisturb            Activity = "DoNotDisturb"
	ActInACall                 Activity = "InACall"
	ActInAConferenceCall       Activity = "InAConferenceCall"
	ActInactive                Activity = "Inactive"
	ActInAMeeting              Activity = "InAMeeting"
	ActOffline                 Activity = "Offline"
	ActOffWork                 Activity = "OffWork"
	ActOutOfOffice             Activity = "OutOfOffice"
	ActPresenceUnknown         Activity = "PresenceUnknown"
	ActPresenting              Activity = "Presenting"
	ActUrgentInterruptionsOnly Activity = "UrgentInterruptionsOnly"
	ActFocusing                Activity = "Focusing"
)

var availabilities = index([]Availability{Available, AvailableIdle, Away, BeRightBack, Busy,
	BusyIdle, DoNotDisturb, Offline, PresenceUnknown})

var activities = index([]Activity{ActAvailable, ActAway, ActBeRightBack, ActBusy,
	ActDoNotDisturb, ActInACall, ActInAConferenceCall, ActInactive, ActInAMeeting, ActOffline,
	ActOffWork, ActOutOfOffice, ActPresenceUnknown, ActPresenting, ActUrgentInterruptionsOnly,
	ActFocusing})

func index[T ~string](vs []T) map[string]T {
	m := make(map[string]T, len(vs))
	for _, v := range vs {
		m[strings.ToLower(string(v))] = v
	}
	return m
}

// ParseAvailability maps a Graph availability to its canonical value, ignoring case
// (newer Graph pages show camelCase). An unknown or empty value gives PresenceUnknown
// and ok=false, so the caller can log it once.
func ParseAvailability(s string) (a Availability, ok bool) {
	if v, found := availabilities[strings.ToLower(strings.TrimSpace(s))]; found {
		return v, true
	}
	return PresenceUnknown, false
}

// ParseActivity is ParseAvailability for activities.
func ParseActivity(s string) (a Activity, ok bool) {
	if v, found := activities[strings.ToLower(strings.TrimSpace(s))]; found {
		return v, true
	}
	return ActPresenceUnknown, false
}

// State is the normalised presence of one user at one time.
type State struct {
	UPN          string       `json:"upn"`
	Availability Availability `json:"availability"`
	Activity     Activity     `json:"activity"`
	OutOfOffice  bool         `json:"outOfOffice"`
	// Seen is when presencebridge last read this state from Graph.
	Seen time.Time `json:"seen"`
	// Changed is when the state most likely began: for a Teams state, midway
	// between the read that first showed it and the read before (the read
	// itself when there was none since presencebridge started).
	Changed time.Time `json:"changed"`
}

// SameAs reports whether s and o show the same presence (times are ignored).
func (s State) SameAs(o State) bool {
	return s.Availability == o.Availability && s.Activity == o.Activity && s.OutOfOffice == o.OutOfOffice
}

// Change is one user's new Teams presence, as the poller saw it: where the Teams
// side hands over to the rest.
type Change struct {
	User     users.User
	Previous State // zero on first sight
	Current  State
}
