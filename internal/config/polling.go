package config

import "time"

// Polling is the [Polling] section.
type Polling struct {
	Interval        time.Duration // wanted cycle time
	BudgetRequests  int           // Graph requests allowed per BudgetWindow per app per tenant
	BudgetWindow    time.Duration
	BudgetShare     float64 // fraction (0.01..0.90) of the budget presencebridge may use
	RequestTimeout  time.Duration
	ResolveInterval time.Duration // how often UPNs are resolved to object ids again
	ResolveRate     float64       // $batch requests per second while resolving
}

// polling reads [Polling]: the cycle and the throttle budget every account
// starts from.
func (l *loader) polling(cfg *Config, s *section) {
	p := &cfg.Polling
	p.Interval = l.duration(s.get("Interval"), DefaultInterval, time.Second)
	p.BudgetRequests = l.integer(s.get("BudgetRequests"), DefaultBudgetRequests, 1)
	p.BudgetWindow = l.duration(s.get("BudgetWindow"), DefaultBudgetWindow, time.Second)
	p.BudgetShare = l.percent(s.get("BudgetShare"), DefaultBudgetSharePercent)
	p.RequestTimeout = l.duration(s.get("RequestTimeout"), DefaultRequestTimeout, time.Second)
	p.ResolveInterval = l.duration(s.get("ResolveInterval"), DefaultResolveInterval, time.Minute)
	p.ResolveRate = DefaultResolveRate
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
