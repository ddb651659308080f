package presence

import (
	"strings"
	"testing"
)

func TestDefaultMapping(t *testing.T) {
	m := DefaultMapping()
	cases := []struct {
		a    Availability
		act  Activity
		ooo  bool
		want Mapped
	}{
		{Available, ActAvailable, false, mapped("available", "open", "", "Available")},
		{Busy, ActInACall, false, mapped("oncall", "open", "on-the-phone", "In a call")},
		{Busy, ActInAConferenceCall, false, mapped("oncall", "open", "on-the-phone", "In a conference call")},
		{Busy, ActInAMeeting, false, mapped("busy", "open", "meeting", "In a meeting")},
		{Busy, ActBusy, false, mapped("busy", "open", "busy", "Busy")},
		{DoNotDisturb, ActPresenting, false, mapped("dnd", "open", "presentation", "Presenting")},
		{BeRightBack, ActBeRightBack, false, mapped("away", "open", "away", "Be right back")},
		{Offline, ActOffWork, false, mapped("offline", "closed", "", "Off work")},
		{Offline, ActOffline, false, mapped("offline", "closed", "", "Offline")},
		{PresenceUnknown, ActPresenceUnknown, false, mapped("unknown", "closed", "unknown", "Presence unknown")},
		// Out of office wins unless the user is busy.
		{Offline, ActOffWork, true, mapped("away", "open", "vacation", "Out of office")},
		{Busy, ActInACall, true, mapped("oncall", "open", "on-the-phone", "In a call")},
		// An availability the table does not know falls to */*.
		{Availability("Focusing"), ActFocusing, false, mapped("unknown", "closed", "unknown", "Presence unknown")},
	}
	for _, c := range cases {
		got := m.Map(State{Availability: c.a, Activity: c.act, OutOfOffice: c.ooo})
		if got != c.want {
			t.Errorf("%s/%s ooo=%v: got %q, want %q", c.a, c.act, c.ooo, got, c.want)
		}
	}
	if s := m.Stale(); s.Basic != "closed" || s.Note == "" {
		t.Errorf("stale fallback %q: want closed with a note", s)
	}
}

func TestMappingOverride(t *testing.T) {
	m := DefaultMapping()
	// Keys are case-insensitive and canonicalised; "*/Activity" beats "Availability/*".
	if err := m.Set("*/inacall", "talking | open | on-the-phone | On the phone"); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("away/*", "away | closed | - |"); err != nil {
		t.Fatal(err)
	}
	if got := m.Map(State{Availability: Busy, Activity: ActInACall}); got.State != "oncall" {
		t.Errorf("exact default Busy/InACall must still beat */InACall, got %q", got)
	}
	if got := m.Map(State{Availability: DoNotDisturb, Activity: ActInACall}); got.State != "talking" {
		t.Errorf("DoNotDisturb/InACall: got %q, want the */InACall override", got)
	}
	if got := m.Map(State{Availability: Away, Activity: ActAway}); got != (mapped("away", "closed", "", "")) {
		t.Errorf("Away/Away: got %q", got)
	}
	if r, ok := m.Rule("*/InACall"); !ok || r.State != "talking" {
		t.Errorf("Rule(*/InACall) = %q, %v", r, ok)
	}
	keys := m.Keys()
	if keys[len(keys)-1] != "*/InACall" {
		t.Errorf("added key should be listed after the defaults: %v", keys)
	}
}

func TestMappingErrors(t *testing.T) {
	m := DefaultMapping()
	cases := []struct{ key, value, want string }{
		{"Busy", "busy | open | busy | Busy", "Availability/Activity"},
		{"Bussy/*", "busy | open | busy | Busy", `"Bussy" is not a Teams availability`},
		{"Busy/InCall", "busy | open | busy | Busy", `"InCall" is not a Teams activity`},
		{"Busy/*", "busy open busy", "state | basic | activity | note"},
		{"Busy/*", "busy | half | busy | x", `basic status "half" must be open or closed`},
		{"Busy/*", "busy | open | on-phone | x", `"on-phone" is not an RFC 4480 activity`},
		{"Busy/*", "on call | open | busy | x", "must be one word"},
	}
	for _, c := range cases {
		err := m.Set(c.key, c.value)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Set(%q, %q) = %v, want an error containing %q", c.key, c.value, err, c.want)
		}
	}
	if got := m.Map(State{Availability: Busy, Activity: ActBusy}); got.State != "busy" {
		t.Errorf("a refused override changed the table: %q", got)
	}
}

// A rule's dialog state and device state follow its state word unless its fifth
// and sixth columns set them; overrides with four columns keep working.
func TestMappingDialogAndDeviceState(t *testing.T) {
	m := DefaultMapping()
	cases := []struct {
		a          Availability
		act        Activity
		dialog, ds string
	}{
		{Busy, ActInACall, "confirmed", "INUSE"},
		{Busy, ActInAMeeting, "confirmed", "INUSE"},
		{DoNotDisturb, ActPresenting, "confirmed", "BUSY"},
		{Available, ActAvailable, "terminated", "NOT_INUSE"},
		{Away, ActAway, "terminated", "NOT_INUSE"},
		{Offline, ActOffline, "terminated", "UNAVAILABLE"},
		{PresenceUnknown, ActPresenceUnknown, "terminated", "NOT_INUSE"},
	}
	for _, c := range cases {
		got := m.Map(State{Availability: c.a, Activity: c.act})
		if got.DialogState() != c.dialog || got.Device() != c.ds {
			t.Errorf("%s/%s shows %s, %s; want %s, %s", c.a, c.act, got.DialogState(), got.Device(), c.dialog, c.ds)
		}
	}
	if err := m.Set("Busy/InAMeeting", "busy | open | meeting | In a meeting | terminated | busy"); err != nil {
		t.Fatal(err)
	}
	got := m.Map(State{Availability: Busy, Activity: ActInAMeeting})
	if got.DialogState() != "terminated" || got.Device() != "BUSY" {
		t.Errorf("override read as %+v", got)
	}
	if s := got.String(); s != "busy | open | meeting | In a meeting | terminated | BUSY" {
		t.Errorf("String() = %q", s)
	}
	if err := m.Set("Away/*", "ringing | open | away | Custom | - | RINGING"); err != nil {
		t.Fatal(err)
	}
	if got := m.Map(State{Availability: Away, Activity: ActAway}); got.DialogState() != "terminated" || got.Device() != "RINGING" {
		t.Errorf("a custom word with a device state only: %+v", got)
	}
	for _, bad := range []string{"busy | open | busy | Busy | lit", "busy | open | busy | Busy | confirmed | DND", "a | open | - | n | confirmed | INUSE | x"} {
		if err := m.Set("Busy/*", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
