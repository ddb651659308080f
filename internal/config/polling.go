package config

import (
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/teams/poll"
)

// Polling is the [Polling] section: the pollers' settings (defaults in
// poll.DefaultSettings) and the throttle budget every account starts from.
type Polling struct {
	poll.Settings
	BudgetRequests int // Graph requests allowed per BudgetWindow per app per tenant
	BudgetWindow   time.Duration
	BudgetShare    float64 // fraction (0.01..0.90) of the budget presencebridge may use
}

// polling reads [Polling]: the cycle and the throttle budget every account
// starts from.
func (l *loader) polling(cfg *Config, s *section) {
	p := &cfg.Polling
	p.Settings = poll.DefaultSettings()
	def := p.Settings
	if e := s.get("Interval"); !strings.EqualFold(e.value, "auto") {
		p.Interval = l.duration(e, def.Interval, time.Second)
	}
	p.MinInterval = l.durationIn(s.get("MinInterval"), def.MinInterval, 500*time.Millisecond, time.Hour)
	p.BudgetRequests = l.integer(s.get("BudgetRequests"), DefaultBudgetRequests, 1)
	p.BudgetWindow = l.duration(s.get("BudgetWindow"), DefaultBudgetWindow, time.Second)
	p.BudgetShare = l.percent(s.get("BudgetShare"), DefaultBudgetSharePercent)
	p.RequestTimeout = l.duration(s.get("RequestTimeout"), def.RequestTimeout, time.Second)
	p.ResolveInterval = l.duration(s.get("ResolveInterval"), def.ResolveInterval, time.Minute)
	if e := s.get("ResolveRate"); e.set {
		r, err := parseFinite(e.value)
		switch {
		case err != nil:
			l.bad(e, "%s; use $batch requests per second, e.g. 10", err)
		case r < 0.1 || r > 100:
			l.bad(e, "out of range; use 0.1 to 100 $batch requests per second")
		default:
			p.ResolveRate = r
		}
	}
}
