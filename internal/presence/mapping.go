package presence

import (
	"fmt"
	"slices"
	"strings"
)

// Mapped is what the phone system shows for one Teams state: a state word for
// HTTP targets, and PIDF basic status, RPID activity and note for SIP targets.
type Mapped struct {
	// State is the PBX state word sent to HTTP targets:
	// available, busy, oncall, dnd, away, offline or unknown (or a custom word).
	State string `json:"state"`
	// Basic is the PIDF <basic> status: "open" or "closed" (RFC 3863).
	Basic string `json:"basic"`
	// Activity is the RPID activity element (RFC 4480), e.g. "on-the-phone";
	// empty for none.
	Activity string `json:"activity,omitempty"`
	// Note is the human wording, as Teams shows it ("In a call").
	Note string `json:"note,omitempty"`
}

// String renders m in the Presence.ini syntax: "state | basic | activity | note".
func (m Mapped) String() string {
	act := m.Activity
	if act == "" {
		act = "-"
	}
	return m.State + " | " + m.Basic + " | " + act + " | " + m.Note
}

// RPIDActivities are the activity elements of RFC 4480 section 3.2.
var RPIDActivities = []string{"appointment", "away", "breakfast", "busy", "dinner",
	"holiday", "in-transit", "looking-for-work", "meal", "meeting", "on-the-phone",
	"performance", "permanent-absence", "playing", "presentation", "shopping",
	"sleeping", "spectator", "steering", "travel", "tv", "unknown", "vacation",
	"working", "worship"}

// Mapping keys that are not an Availability/Activity pair.
const (
	// KeyOutOfOffice applies when Graph reports out-of-office settings on and the
	// user is not busy (Busy, BusyIdle, DoNotDisturb keep their own mapping).
	KeyOutOfOffice = "OutOfOffice"
	// KeyStale applies when the user's account has not read presence for longer
	// than [Stale] After (Graph unreachable, sign-in dead).
	KeyStale = "Stale"
)

// Mapping turns Teams states into PBX states. Rules are keyed "Availability/Activity",
// where either side may be "*"; the most specific rule wins: exact pair, then
// "*/Activity", then "Availability/*", then "*/*".
type Mapping struct {
	rules map[string]Mapped // lower-case key -> rule
	keys  map[string]string // lower-case key -> key as written
}

// DefaultMapping follows common vendor practice: a call is "on-the-phone"
// (OpenScape's busy-in-a-call), meetings are "meeting", DoNotDisturb is busy with
// the Teams wording, and Offline is closed.
func DefaultMapping() *Mapping {
	m := &Mapping{rules: map[string]Mapped{}, keys: map[string]string{}}
	for _, r := range defaultRules {
		m.rules[strings.ToLower(r.key)] = r.m
		m.keys[strings.ToLower(r.key)] = r.key
	}
	return m
}

type rule struct {
	key string
	m   Mapped
}

// defaultRules in documentation order (Presence.ini.example lists the same).
var defaultRules = []rule{
	{"*/*", Mapped{"unknown", "closed", "unknown", "Presence unknown"}},
	{"Available/*", Mapped{"available", "open", "", "Available"}},
	{"AvailableIdle/*", Mapped{"away", "open", "away", "Away"}},
	{"Busy/*", Mapped{"busy", "open", "busy", "Busy"}},
	{"Busy/InACall", Mapped{"oncall", "open", "on-the-phone", "In a call"}},
	{"Busy/InAConferenceCall", Mapped{"oncall", "open", "on-the-phone", "In a conference call"}},
	{"Busy/InAMeeting", Mapped{"busy", "open", "meeting", "In a meeting"}},
	{"BusyIdle/*", Mapped{"busy", "open", "busy", "Busy"}},
	{"DoNotDisturb/*", Mapped{"dnd", "open", "busy", "Do not disturb"}},
	{"DoNotDisturb/Presenting", Mapped{"dnd", "open", "presentation", "Presenting"}},
	{"DoNotDisturb/Focusing", Mapped{"dnd", "open", "busy", "Focusing"}},
	{"DoNotDisturb/UrgentInterruptionsOnly", Mapped{"dnd", "open", "busy", "Urgent interruptions only"}},
	{"Away/*", Mapped{"away", "open", "away", "Away"}},
	{"BeRightBack/*", Mapped{"away", "open", "away", "Be right back"}},
	{"Offline/*", Mapped{"offline", "closed", "", "Offline"}},
	{"Offline/OffWork", Mapped{"offline", "closed", "", "Off work"}},
	{"PresenceUnknown/*", Mapped{"unknown", "closed", "unknown", "Presence unknown"}},
	{KeyOutOfOffice, Mapped{"away", "open", "vacation", "Out of office"}},
	{KeyStale, Mapped{"unknown", "closed", "unknown", "Teams presence not available"}},
}

// DefaultMappingKeys lists the default rules' keys in documentation order.
func DefaultMappingKeys() []string {
	keys := make([]string, len(defaultRules))
	for i, r := range defaultRules {
		keys[i] = r.key
	}
	return keys
}

// Map gives the PBX state for s.
func (m *Mapping) Map(s State) Mapped {
	if s.OutOfOffice && !busy(s.Availability) {
		return m.rules[strings.ToLower(KeyOutOfOffice)]
	}
	a, act := strings.ToLower(string(s.Availability)), strings.ToLower(string(s.Activity))
	for _, k := range []string{a + "/" + act, "*/" + act, a + "/*", "*/*"} {
		if r, ok := m.rules[k]; ok {
			return r
		}
	}
	return m.rules["*/*"] // always present: Set cannot remove it
}

// Stale gives the fallback shown while an account cannot read presence.
func (m *Mapping) Stale() Mapped { return m.rules[strings.ToLower(KeyStale)] }

func busy(a Availability) bool {
	return a == Busy || a == BusyIdle || a == DoNotDisturb
}

// Rule returns the rule stored under key (as Set accepts it) and whether there is one.
func (m *Mapping) Rule(key string) (Mapped, bool) {
	r, ok := m.rules[strings.ToLower(strings.TrimSpace(key))]
	return r, ok
}

// Keys lists the keys of all rules, defaults first in documentation order,
// then overrides that added new keys, sorted.
func (m *Mapping) Keys() []string {
	out := DefaultMappingKeys()
	var extra []string
	for lk, k := range m.keys {
		if !slices.ContainsFunc(out, func(d string) bool { return strings.EqualFold(d, lk) }) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

// Set overrides or adds one rule. key is "Availability/Activity" (either side may
// be "*"), "OutOfOffice" or "Stale"; value is "state | basic | activity | note"
// where activity is an RFC 4480 activity or "-" for none, and note may be empty.
// The error says what is allowed, for the config loader to place in a sentence.
func (m *Mapping) Set(key, value string) error {
	canon, err := canonicalKey(key)
	if err != nil {
		return err
	}
	r, err := ParseMapped(value)
	if err != nil {
		return err
	}
	m.rules[strings.ToLower(canon)] = r
	m.keys[strings.ToLower(canon)] = canon
	return nil
}

func canonicalKey(key string) (string, error) {
	key = strings.TrimSpace(key)
	switch strings.ToLower(key) {
	case strings.ToLower(KeyOutOfOffice):
		return KeyOutOfOffice, nil
	case strings.ToLower(KeyStale):
		return KeyStale, nil
	}
	a, act, ok := strings.Cut(key, "/")
	if !ok {
		return "", fmt.Errorf("the key must be Availability/Activity (e.g. Busy/InACall or Away/*), %s or %s", KeyOutOfOffice, KeyStale)
	}
	a, act = strings.TrimSpace(a), strings.TrimSpace(act)
	if a != "*" {
		v, ok := ParseAvailability(a)
		if !ok && !strings.EqualFold(a, string(PresenceUnknown)) {
			return "", fmt.Errorf("%q is not a Teams availability; use one of %s or *", a, strings.Join(availabilityNames(), ", "))
		}
		a = string(v)
	}
	if act != "*" {
		v, ok := ParseActivity(act)
		if !ok && !strings.EqualFold(act, string(ActPresenceUnknown)) {
			return "", fmt.Errorf("%q is not a Teams activity; use one of %s or *", act, strings.Join(activityNames(), ", "))
		}
		act = string(v)
	}
	return a + "/" + act, nil
}

// ParseMapped reads "state | basic | activity | note".
func ParseMapped(value string) (Mapped, error) {
	parts := strings.Split(value, "|")
	if len(parts) < 3 || len(parts) > 4 {
		return Mapped{}, fmt.Errorf("the value must be \"state | basic | activity | note\", e.g. \"oncall | open | on-the-phone | In a call\"")
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	r := Mapped{State: parts[0], Basic: strings.ToLower(parts[1]), Activity: strings.ToLower(parts[2])}
	if len(parts) == 4 {
		r.Note = parts[3]
	}
	if r.State == "" || strings.ContainsAny(r.State, " \t\"<>&") {
		return Mapped{}, fmt.Errorf("the state %q must be one word (e.g. available, busy, oncall, dnd, away, offline, unknown)", r.State)
	}
	if r.Basic != "open" && r.Basic != "closed" {
		return Mapped{}, fmt.Errorf("the basic status %q must be open or closed", parts[1])
	}
	if r.Activity == "-" || r.Activity == "" {
		r.Activity = ""
	} else if !slices.Contains(RPIDActivities, r.Activity) {
		return Mapped{}, fmt.Errorf("the activity %q is not an RFC 4480 activity; use - for none or one of %s", parts[2], strings.Join(RPIDActivities, ", "))
	}
	return r, nil
}

func availabilityNames() []string {
	out := make([]string, 0, len(availabilities))
	for _, v := range availabilities {
		out = append(out, string(v))
	}
	slices.Sort(out)
	return out
}

func activityNames() []string {
	out := make([]string, 0, len(activities))
	for _, v := range activities {
		out = append(out, string(v))
	}
	slices.Sort(out)
	return out
}
