// Package watch follows the PBX's own state of each user, outbound only: it
// SUBSCRIBEs (RFC 6665) to the PBX for Event: dialog (RFC 4235, what BLF keys
// use) and, where configured, Event: presence (PIDF), answers and parses the
// NOTIFYs, and hands each user's new presence.PBXState to the rest.
package watch

import "time"

// Watch values: which event packages are subscribed to.
const (
	Off      = "off"
	Dialog   = "dialog"
	Presence = "presence"
	Both     = "both"
)

// Settings are the watch's keys of the [PBX] section; the SIP connection (server,
// transport, outbound proxy, TLS, digest credentials) is [SIP]'s. Config decodes
// them starting from DefaultSettings and checks them; New takes them as they are.
type Settings struct {
	// Watch is Off, Dialog, Presence or Both.
	Watch string
	// Expires is the subscription lifetime asked for; the PBX's answer decides,
	// and subscriptions are refreshed at 80% of it.
	Expires time.Duration
	// Rate is new SUBSCRIBE requests per second at most (initial ones and
	// re-establishments; refreshes share it), so thousands of users do not flood
	// the PBX at start.
	Rate float64
	// Listen is the local host:port NOTIFYs come to (the Contact of every
	// subscription); SUBSCRIBEs are sent from it. Empty: a free port on the
	// address that reaches the PBX.
	Listen string
}

// DefaultSettings are the watch's defaults (Presence.ini.example lists them).
func DefaultSettings() Settings {
	return Settings{Watch: Off, Expires: time.Hour, Rate: 50}
}

// Events are the event packages subscribed to for s.Watch.
func (s Settings) Events() []string {
	switch s.Watch {
	case Dialog:
		return []string{"dialog"}
	case Presence:
		return []string{"presence"}
	case Both:
		return []string{"dialog", "presence"}
	}
	return nil
}
