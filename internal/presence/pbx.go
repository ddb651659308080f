package presence

import (
	"time"

	"github.com/presencebridge/presencebridge/internal/users"
)

// Line is what the PBX says of a user's phone line: the second input beside
// Teams, from the dialogs (RFC 4235) and presence (PIDF) the PBX notifies.
type Line string

// Line values, from least to most engaged where a user has several dialogs.
const (
	// LineUnknown: the PBX has said nothing yet (no subscription, or no NOTIFY).
	LineUnknown Line = ""
	// LineIdle: no dialog, or every dialog terminated.
	LineIdle Line = "idle"
	// LineRinging: an early dialog (ringing, or a call being set up).
	LineRinging Line = "ringing"
	// LineInCall: a confirmed dialog, or the PBX's presence says on the phone.
	LineInCall Line = "incall"
)

// PBXState is one user's state as the PBX reports it.
type PBXState struct {
	UPN  string `json:"upn"`
	Line Line   `json:"line"`
	// DND: the phone itself says do not disturb or busy (PIDF basic closed with
	// RPID busy, or do-not-disturb), whatever its line.
	DND bool `json:"dnd,omitempty"`
	// Away: the phone's presence says away (RPID away), with no call.
	Away bool `json:"away,omitempty"`
	// Calls counts the dialogs that are not terminated (several lines, a call on
	// hold and another answered).
	Calls int `json:"calls,omitempty"`
	// Changed is when presencebridge first saw this state differ from the one before.
	Changed time.Time `json:"changed"`
}

// Known reports whether the PBX has said anything of the user.
func (s PBXState) Known() bool { return s.Line != LineUnknown || s.DND || s.Away }

// Says reports whether the PBX's state says more than "idle": a call, a ringing
// line, DND or away set on the phone. WinningTechnology SipSimple lets such a
// state win over Teams.
func (s PBXState) Says() bool {
	return s.Line == LineInCall || s.Line == LineRinging || s.DND || s.Away
}

// SameAs reports whether s and o show the same state (times are ignored).
func (s PBXState) SameAs(o PBXState) bool {
	return s.Line == o.Line && s.DND == o.DND && s.Away == o.Away && s.Calls == o.Calls
}

// PBXChange is one user's new PBX state, as the PBX watch saw it: where the PBX
// side hands over to the rest (compose, and the writer to Teams).
type PBXChange struct {
	User     users.User
	Previous PBXState // zero on first sight
	Current  PBXState
}
