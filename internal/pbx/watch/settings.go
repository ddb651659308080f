// Package watch follows the PBX's own state of each user, outbound only: it
// SUBSCRIBEs (RFC 6665) to the PBX for Event: dialog (RFC 4235, what BLF keys
// use) and, where configured, Event: presence (PIDF), answers and parses the
// NOTIFYs, and hands each user's new presence.PBXState to the rest.
package watch

import (
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/users"
)

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
	// URI is the template of the address watched for each user: empty watches
	// the user's SIP URI; else {user} and {domain} (the SIP URI's user part and
	// host) and {extension} (the users file's) are filled in, e.g.
	// "sip:watch-{extension}@{domain}", for a PBX where the user's own hint
	// also shows presencebridge's device state (Asterisk) and a phone-only
	// hint must be watched instead.
	URI string
}

// URIPlaceholders are what Settings.URI may name.
var URIPlaceholders = []string{"{user}", "{domain}", "{extension}"}

// Target is the SIP URI watched for u, and an error when u lacks what the
// template names (a SIP URI, an extension) or the result is no SIP URI.
func (s Settings) Target(u users.User) (string, error) {
	if u.SIPURI == "" {
		return "", fmt.Errorf("%s has no SIP URI in the users file", u.UPN)
	}
	var own sip.Uri
	if err := sip.ParseUri(u.SIPURI, &own); err != nil {
		return "", fmt.Errorf("the SIP URI %q of %s cannot be read: %w", u.SIPURI, u.UPN, err)
	}
	if s.URI == "" {
		return u.SIPURI, nil
	}
	if strings.Contains(s.URI, "{extension}") && u.Extension == "" {
		return "", fmt.Errorf("%s has no extension in the users file, which [PBX] WatchURI %q names", u.UPN, s.URI)
	}
	out := strings.NewReplacer("{user}", own.User, "{domain}", own.Host, "{extension}", u.Extension).Replace(s.URI)
	var uri sip.Uri
	if err := sip.ParseUri(out, &uri); err != nil || uri.Host == "" {
		return "", fmt.Errorf("[PBX] WatchURI %q gives %q for %s, which is not a SIP URI", s.URI, out, u.UPN)
	}
	return out, nil
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
