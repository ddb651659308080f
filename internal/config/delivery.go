package config

import (
	"strings"
	"time"
)

// Defaults of [Delivery]; Presence.ini.example documents the same values.
const (
	DefaultRetryMin      = time.Second
	DefaultRetryMax      = time.Minute
	DefaultBatchSize     = 500
	DefaultStaleAfter    = 5 * time.Minute
	DefaultReassertRate  = 200.0
	DefaultProbeInterval = 30 * time.Second
)

// Delivery is the [Delivery] section: how targets are retried, and the stale policy.
type Delivery struct {
	RetryMin   time.Duration // first back-off after a failure
	RetryMax   time.Duration // longest back-off
	BatchSize  int           // items handed to a target at once
	StaleAfter time.Duration // publish the [Mapping] Stale fallback after this long without a good cycle; 0 = never
	// ReassertRate is users per second whose last state is re-asserted to a
	// target at start and after it was down; 0 = never.
	ReassertRate float64
	// ProbeInterval is how often an idle target is checked; 0 = never.
	ProbeInterval time.Duration
}

// delivery reads [Delivery]: retries, batches, the stale policy, re-assertion
// and probes.
func (l *loader) delivery(cfg *Config, s *section) {
	d := &cfg.Delivery
	d.RetryMin = l.duration(s.get("RetryMin"), DefaultRetryMin, 100*time.Millisecond)
	d.RetryMax = l.duration(s.get("RetryMax"), DefaultRetryMax, time.Second)
	if d.RetryMax < d.RetryMin {
		l.add(s.get("RetryMax").line, "[%s] RetryMax (%s) is shorter than RetryMin (%s); make it at least as long", s.name, formatDuration(d.RetryMax), formatDuration(d.RetryMin))
	}
	d.BatchSize = l.integer(s.get("BatchSize"), DefaultBatchSize, 1)
	d.StaleAfter = l.durationOrOff(s.get("StaleAfter"), DefaultStaleAfter, 30*time.Second)
	if e := s.get("ReassertRate"); e.value == "0" || strings.EqualFold(e.value, "off") {
		d.ReassertRate = 0
	} else {
		d.ReassertRate = l.rate(e, DefaultReassertRate, "users per second")
	}
	d.ProbeInterval = l.durationOrOff(s.get("ProbeInterval"), DefaultProbeInterval, time.Second)
}
