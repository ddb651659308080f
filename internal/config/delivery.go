package config

import (
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
)

// DefaultStaleAfter is [Delivery] StaleAfter's default; Presence.ini.example
// documents the same value.
const DefaultStaleAfter = 5 * time.Minute

// Delivery is the [Delivery] section: the dispatcher's settings (batches,
// retries, re-assertion, probes; defaults in delivery.DefaultSettings) and the stale
// policy.
type Delivery struct {
	delivery.Settings
	StaleAfter time.Duration // publish the [Mapping] Stale fallback after this long without a good cycle; 0 = never
}

// delivery reads [Delivery]: retries, batches, the stale policy, re-assertion
// and probes.
func (l *loader) delivery(cfg *Config, s *section) {
	d := &cfg.Delivery
	d.Settings = delivery.DefaultSettings()
	def := d.Settings
	d.RetryMin = l.duration(s.get("RetryMin"), def.RetryMin, 100*time.Millisecond)
	d.RetryMax = l.duration(s.get("RetryMax"), def.RetryMax, time.Second)
	if d.RetryMax < d.RetryMin {
		l.add(s.get("RetryMax").line, "[%s] RetryMax (%s) is shorter than RetryMin (%s); make it at least as long", s.name, formatDuration(d.RetryMax), formatDuration(d.RetryMin))
	}
	d.BatchSize = l.integer(s.get("BatchSize"), def.BatchSize, 1)
	d.StaleAfter = l.durationOrOff(s.get("StaleAfter"), DefaultStaleAfter, 30*time.Second)
	if e := s.get("ReassertRate"); isOff(e) {
		d.ReassertRate = 0
	} else {
		d.ReassertRate = l.rate(e, def.ReassertRate, "users per second")
	}
	d.ProbeInterval = l.durationOrOff(s.get("ProbeInterval"), def.ProbeInterval, time.Second)
}
