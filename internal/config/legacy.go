package config

import "strings"

// WinningTechnology values (legacy key RichPresence.WinningTechnology).
const (
	// WinningMSTeams: Teams presence wins over the PBX's own SIP presence.
	WinningMSTeams = "MSTeams"
	// WinningSipSimple: the PBX's SIP presence wins; Teams presence fills in.
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
			l.bad(e, "unknown technology%s; use MSTeams (Teams presence wins) or SipSimple (the PBX's SIP presence wins)",
				didYouMean(e.value, []string{WinningMSTeams, WinningSipSimple}))
		}
	}
}
