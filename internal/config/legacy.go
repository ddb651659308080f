package config

import "strings"

// WinningTechnology values (legacy key RichPresence.WinningTechnology). They
// decide, per user, which of two inputs every target (SIP PUBLISH, HTTP)
// receives: the Teams state, and the PBX's own state that [PBX] Watch reads
// (presence.PBXState). compose applies the rule; config only reads it. With
// [PBX] Watch = off the PBX's state is never known, so both values send the
// Teams state (or the [Mapping] Stale rule) as before.
const (
	// WinningMSTeams: the Teams state wins; the PBX's state is sent only where
	// Teams has none (unknown, or stale: the account cannot read Teams).
	WinningMSTeams = "MSTeams"
	// WinningSipSimple, the legacy default: the PBX's own state wins where it
	// says something (a call, a ringing line, DND or away set on the phone:
	// presence.PBXState.Says); the Teams state otherwise, an idle phone included.
	WinningSipSimple = "SipSimple"
)

// legacy reads the keys above the first section, MSTeamsPresence.Enable and
// RichPresence.WinningTechnology, spelled as the vendors' guides spell them.
func (l *loader) legacy(cfg *Config, s *section) {
	cfg.TeamsEnabled = l.boolean(s.get(keyTeamsEnable), true)
	cfg.WinningTechnology = DefaultWinningTechnology
	if e := s.get(keyWinningTechnology); e.set {
		switch {
		case strings.EqualFold(e.value, WinningMSTeams):
			cfg.WinningTechnology = WinningMSTeams
		case strings.EqualFold(e.value, WinningSipSimple):
			cfg.WinningTechnology = WinningSipSimple
		default:
			l.bad(e, "unknown technology%s; use MSTeams (the Teams state wins) or SipSimple (the PBX's own state wins where it says something)",
				didYouMean(e.value, []string{WinningMSTeams, WinningSipSimple}))
		}
	}
}
