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
	// Dialog is the RFC 4235 dialog state published with Event: dialog, what a
	// BLF key shows: "confirmed" (lit, busy), "early" (blinking) or
	// "terminated" (idle); empty: DialogState derives it from State.
	Dialog string `json:"dialog,omitempty"`
	// DeviceState is the Asterisk device state (NOT_INUSE, INUSE, BUSY,
	// UNAVAILABLE, RINGING, ONHOLD) a dialplan hint shows; empty: Device
	// derives it from State.
	DeviceState string `json:"deviceState,omitempty"`
}

// mapped is a rule with the first four columns; the dialog state and the
// device state follow from its state word.
func mapped(state, basic, activity, note string) Mapped {
	return Mapped{State: state, Basic: basic, Activity: activity, Note: note}
}

// Dialog states (RFC 4235) a rule may give.
var DialogStates = []string{"confirmed", "early", "terminated"}

// DeviceStates are the Asterisk device states a rule may give (those ARI's
// deviceStates resource and DEVICE_STATE() accept).
var DeviceStates = []string{"NOT_INUSE", "INUSE", "BUSY", "UNAVAILABLE", "RINGING", "RINGINUSE", "ONHOLD"}

// byState is what each state word of the defaults shows on a BLF key and as a
// device state: a call, a meeting or busy lights the key (INUSE), DND too
// (BUSY, so busy-on-busy dialplans hold), offline is UNAVAILABLE, the rest idle.
var byState = map[string][2]string{
	"available": {"terminated", "NOT_INUSE"},
	"away":      {"terminated", "NOT_INUSE"},
	"busy":      {"confirmed", "INUSE"},
	"oncall":    {"confirmed", "INUSE"},
	"dnd":       {"confirmed", "BUSY"},
	"offline":   {"terminated", "UNAVAILABLE"},
	"unknown":   {"terminated", "NOT_INUSE"},
}

// DialogState is the dialog state m shows: its Dialog column, else what its
// state word shows (a custom word: terminated).
func (m Mapped) DialogState() string {
	if m.Dialog != "" {
		return m.Dialog
	}
	if d, ok := byState[strings.ToLower(m.State)]; ok {
		return d[0]
	}
	return "terminated"
}

// Device is the Asterisk device state m shows: its DeviceState column, else
// what its state word shows (a custom word: NOT_INUSE).
func (m Mapped) Device() string {
	if m.DeviceState != "" {
		return m.DeviceState
	}
	if d, ok := byState[strings.ToLower(m.State)]; ok {
		return d[1]
	}
	return "NOT_INUSE"
}

// String renders m in the Presence.ini syntax: "state | basic | activity |
// note", with "| dialog | device state" where m sets them.
func (m Mapped) String() string {
	act := m.Activity
	if act == "" {
		act = "-"
	}
	s := m.State + " | " + m.Basic + " | " + act + " | " + m.Note
	if m.Dialog != "" || m.DeviceState != "" {
		s += " | " + m.DialogState() + " | " + m.Device()
	}
	return s
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
	{"*/*", mapped("unknown", "closed", "unknown", "Presence unknown")},
	{"Available/*", mapped("available", "open", "", "Available")},
	{"AvailableIdle/*", mapped("away", "open", "away", "Away")},
	{"Busy/*", mapped("busy", "open", "busy", "Busy")},
	{"Busy/InACall", mapped("oncall", "open", "on-the-phone", "In a call")},
	{"Busy/InAConferenceCall", mapped("oncall", "open", "on-the-phone", "In a conference call")},
	{"Busy/InAMeeting", mapped("busy", "open", "meeting", "In a meeting")},
	{"BusyIdle/*", mapped("busy", "open", "busy", "Busy")},
	{"DoNotDisturb/*", mapped("dnd", "open", "busy", "Do not disturb")},
	{"DoNotDisturb/Presenting", mapped("dnd", "open", "presentation", "Presenting")},
	{"DoNotDisturb/Focusing", mapped("dnd", "open", "busy", "Focusing")},
	{"DoNotDisturb/UrgentInterruptionsOnly", mapped("dnd", "open", "busy", "Urgent interruptions only")},
	{"Away/*", mapped("away", "open", "away", "Away")},
	{"BeRightBack/*", mapped("away", "open", "away", "Be right back")},
	{"Offline/*", mapped("offline", "closed", "", "Offline")},
	{"Offline/OffWork", mapped("offline", "closed", "", "Off work")},
	{"PresenceUnknown/*", mapped("unknown", "closed", "unknown", "Presence unknown")},
	{KeyOutOfOffice, mapped("away", "open", "vacation", "Out of office")},
	{KeyStale, mapped("unknown", "closed", "unknown", "Teams presence not available")},
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

// ParseMapped reads "state | basic | activity | note", optionally followed by
// "| dialog | device state" (either may be "-": follow the state word).
func ParseMapped(value string) (Mapped, error) {
	parts := strings.Split(value, "|")
	if len(parts) < 3 || len(parts) > 6 {
		return Mapped{}, fmt.Errorf("the value must be \"state | basic | activity | note\", e.g. \"oncall | open | on-the-phone | In a call\", optionally followed by \"| dialog | device state\", e.g. \"| confirmed | INUSE\"")
	}
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	r := Mapped{State: parts[0], Basic: strings.ToLower(parts[1]), Activity: strings.ToLower(parts[2])}
	if len(parts) >= 4 {
		r.Note = parts[3]
	}
	if len(parts) >= 5 && parts[4] != "-" && parts[4] != "" {
		r.Dialog = strings.ToLower(parts[4])
		if !slices.Contains(DialogStates, r.Dialog) {
			return Mapped{}, fmt.Errorf("the dialog state %q must be %s, or - to follow the state word", parts[4], strings.Join(DialogStates, ", "))
		}
	}
	if len(parts) == 6 && parts[5] != "-" && parts[5] != "" {
		r.DeviceState = strings.ToUpper(parts[5])
		if !slices.Contains(DeviceStates, r.DeviceState) {
			return Mapped{}, fmt.Errorf("the device state %q must be one of %s, or - to follow the state word", parts[5], strings.Join(DeviceStates, ", "))
		}
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
