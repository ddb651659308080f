// Package write shows the PBX's calls in Teams: for each user whose PBX state
// maps to a Teams pair it calls setPresence with the application's session,
// renews it while the state lasts, and calls clearPresence when it ends, so
// Teams falls back to the user's own state.
package write

import (
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// Pair is a Teams availability and activity that setPresence accepts.
type Pair struct {
	Availability presence.Availability
	Activity     presence.Activity
}

// Allowed are the pairs setPresence accepts (Microsoft Graph answers 400 to others).
var Allowed = []Pair{
	{presence.Available, presence.ActAvailable},
	{presence.Busy, presence.ActInACall},
	{presence.Busy, presence.ActInAConferenceCall},
	{presence.Away, presence.ActAway},
	{presence.DoNotDisturb, presence.ActPresenting},
}

// Settings are the writer's keys of the [PBX] section. Config decodes them
// starting from DefaultSettings and checks them; New takes them as they are.
type Settings struct {
	// InCall, Ringing, DND and Away are the Teams pair each PBX state becomes;
	// a nil pair writes nothing for that state.
	InCall, Ringing, DND, Away *Pair
	// Expiration is the expirationDuration of each setPresence (PT5M..PT4H); a
	// session is renewed at 80% of it while the state lasts, so a crash leaves at
	// most one Expiration of stale state in Teams.
	Expiration time.Duration
}

// DefaultSettings are the writer's defaults (Presence.ini.example lists them):
// a call is Busy/InACall; ringing, DND and away on the phone write nothing.
func DefaultSettings() Settings {
	return Settings{InCall: &Pair{presence.Busy, presence.ActInACall}, Expiration: 5 * time.Minute}
}

// For is the pair s gives st, and false where st writes nothing (the session is
// cleared). A call wins over DND, DND over ringing, ringing over away.
func (s Settings) For(st presence.PBXState) (Pair, bool) {
	var p *Pair
	switch {
	case st.Line == presence.LineInCall:
		p = s.InCall
	case st.DND:
		p = s.DND
	case st.Line == presence.LineRinging:
		p = s.Ringing
	case st.Away:
		p = s.Away
	}
	if p == nil {
		return Pair{}, false
	}
	return *p, true
}
