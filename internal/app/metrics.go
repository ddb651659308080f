package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/presencebridge/presencebridge/internal/platform/histogram"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
)

// healthCycles is how many cycle intervals without a good poll of any account
// make /healthz fail (at least healthFloor).
const (
	healthCycles = 3
	healthFloor  = time.Minute
)

// collector turns the status report into Prometheus metrics at scrape time, so
// the figures are exactly those of `presencebridge status`.
type collector struct{ a *App }

var (
	descUsers        = prometheus.NewDesc("presencebridge_users", "Users served by the account, by state of their UPN.", []string{"account", "state"}, nil)
	descCycles       = prometheus.NewDesc("presencebridge_poll_cycles_total", "Poll cycles run.", []string{"account"}, nil)
	descCycleSeconds = prometheus.NewDesc("presencebridge_poll_last_cycle_seconds", "Duration of the last poll cycle.", []string{"account"}, nil)
	descInterval     = prometheus.NewDesc("presencebridge_poll_interval_seconds", "Effective cycle interval (configured or what the budget allows).", []string{"account"}, nil)
	descLastGood     = prometheus.NewDesc("presencebridge_poll_last_good_cycle_timestamp_seconds", "When the last cycle that read every user ended.", []string{"account"}, nil)
	descBudget       = prometheus.NewDesc("presencebridge_budget_share_used_ratio", "Share of the Graph throttle budget used in the last window.", []string{"account"}, nil)
	descThrottled    = prometheus.NewDesc("presencebridge_graph_throttled_total", "429 answers from Graph.", []string{"account"}, nil)
	descThrottled1h  = prometheus.NewDesc("presencebridge_graph_throttled_last_hour", "429 answers from Graph in the last hour.", []string{"account"}, nil)
	descChanges      = prometheus.NewDesc("presencebridge_presence_changes_total", "Presence changes passed on.", []string{"account"}, nil)
	descSignIn       = prometheus.NewDesc("presencebridge_signin_ok", "1 when the account's last token request succeeded.", []string{"account", "state"}, nil)
	descTokenExpiry  = prometheus.NewDesc("presencebridge_token_expiry_timestamp_seconds", "When the account's current access token expires.", []string{"account"}, nil)
	descSecretExpiry = prometheus.NewDesc("presencebridge_client_secret_expiry_timestamp_seconds", "When the account's client secret expires (needs Application.Read.All).", []string{"account"}, nil)
	descStale        = prometheus.NewDesc("presencebridge_account_stale", "1 while the account's users are shown as stale on the PBX.", []string{"account"}, nil)
	descPending      = prometheus.NewDesc("presencebridge_target_pending", "States queued for the target and not yet accepted.", []string{"target"}, nil)
	descSent         = prometheus.NewDesc("presencebridge_target_sent_total", "States the target accepted.", []string{"target"}, nil)
	descFailed       = prometheus.NewDesc("presencebridge_target_failed_total", "Failed delivery attempts.", []string{"target"}, nil)
	descDropped      = prometheus.NewDesc("presencebridge_target_dropped_total", "States the target refused for good.", []string{"target"}, nil)
	descUp           = prometheus.NewDesc("presencebridge_target_up", "0 while the target is down (backing off).", []string{"target"}, nil)
	descSubs         = prometheus.NewDesc("presencebridge_pbx_watched_users", "Users whose calls the PBX watch follows, by state of their subscriptions.", []string{"state"}, nil)
	descInCall       = prometheus.NewDesc("presencebridge_pbx_calls_in_progress", "Users the PBX reports in a call.", nil, nil)
	descNotifies     = prometheus.NewDesc("presencebridge_pbx_notifies_total", "NOTIFYs received from the PBX, by outcome.", []string{"outcome"}, nil)
	descWrites       = prometheus.NewDesc("presencebridge_teams_writes_total", "setPresence and clearPresence calls, by outcome.", []string{"account", "outcome"}, nil)
	descSessions     = prometheus.NewDesc("presencebridge_teams_sessions", "Presence sessions presencebridge holds in Teams (calls shown there).", []string{"account"}, nil)
	descWriteLatency = prometheus.NewDesc("presencebridge_teams_write_latency_seconds", "Time from the PBX's state to Graph accepting its setPresence, over the last writes.", []string{"account", "quantile"}, nil)
	descPollRequest  = prometheus.NewDesc("presencebridge_poll_request_seconds", "Duration of each getPresencesByUserId request (every try), by outcome: ok, throttled (429), error (any other failure, the request timeout included).", []string{"account", "outcome"}, nil)
	descLatency      = prometheus.NewDesc("presencebridge_delivery_latency_seconds", "Time from the estimated moment of the change in Teams (midway between the two reads that tell it) to the target's acceptance.", []string{"target"}, nil)
	descPBXLatency   = prometheus.NewDesc("presencebridge_pbx_delivery_latency_seconds", "Time from presencebridge reading a change of the PBX's own state (its NOTIFY) to the target's acceptance, for states the PBX's calls decide (RichPresence.WinningTechnology).", []string{"target"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUsers, descCycles, descCycleSeconds, descInterval, descLastGood, descBudget,
		descThrottled, descThrottled1h, descChanges, descSignIn, descTokenExpiry, descSecretExpiry, descStale, descPending, descSent, descFailed, descDropped, descUp,
		descSubs, descInCall, descNotifies, descWrites, descSessions, descWriteLatency, descPollRequest, descLatency, descPBXLatency} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.a.report()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ctr := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	hist := func(d *prometheus.Desc, s histogram.Snapshot, labels ...string) {
		ch <- prometheus.MustNewConstHistogram(d, s.Count, s.Sum, s.Buckets(), labels...)
	}
	for _, ac := range r.Accounts {
		p := ac.Polling
		g(descUsers, float64(p.Resolved), ac.ID, "resolved")
		g(descUsers, float64(len(p.Unknown)), ac.ID, "unknown")
		g(descUsers, float64(p.Users-p.Resolved-len(p.Unknown)), ac.ID, "pending")
		ctr(descCycles, float64(p.Cycles), ac.ID)
		g(descCycleSeconds, p.LastCycleDuration.Seconds(), ac.ID)
		g(descInterval, p.CycleInterval.Seconds(), ac.ID)
		if !p.LastGoodCycle.IsZero() {
			g(descLastGood, float64(p.LastGoodCycle.UnixMilli())/1000, ac.ID)
		}
		g(descBudget, p.BudgetShareUsed, ac.ID)
		ctr(descThrottled, float64(p.Throttled), ac.ID)
		g(descThrottled1h, float64(p.ThrottledLastHour), ac.ID)
		ctr(descChanges, float64(p.ChangesEmitted), ac.ID)
		hist(descPollRequest, ac.PollRequests.OK, ac.ID, "ok")
		hist(descPollRequest, ac.PollRequests.Throttled, ac.ID, "throttled")
		hist(descPollRequest, ac.PollRequests.Error, ac.ID, "error")
		ok := 0.0
		if ac.Sign.State == auth.StateOK {
			ok = 1
		}
		g(descSignIn, ok, ac.ID, string(ac.Sign.State))
		if !ac.Sign.ExpiresOn.IsZero() {
			g(descTokenExpiry, float64(ac.Sign.ExpiresOn.Unix()), ac.ID)
		}
		if ac.Secret != nil && !ac.Secret.Expires.IsZero() {
			g(descSecretExpiry, float64(ac.Secret.Expires.Unix()), ac.ID)
		}
		stale := 0.0
		if !ac.StaleSince.IsZero() {
			stale = 1
		}
		g(descStale, stale, ac.ID)
		if w := ac.Writes; w != nil {
			for outcome, n := range map[string]int{"set": w.Counts.Set, "renewed": w.Counts.Renewed, "cleared": w.Counts.Cleared,
				"failed": w.Counts.Failed, "throttled": w.Counts.Throttled} {
				ctr(descWrites, float64(n), ac.ID, outcome)
			}
			g(descSessions, float64(w.Held), ac.ID)
			if w.Latency.Samples > 0 {
				g(descWriteLatency, w.Latency.P50.Seconds(), ac.ID, "0.5")
				g(descWriteLatency, w.Latency.P95.Seconds(), ac.ID, "0.95")
				g(descWriteLatency, w.Latency.P99.Seconds(), ac.ID, "0.99")
			}
		}
	}
	if w := r.PBXWatch; w != nil {
		g(descSubs, float64(w.Subscribed), "subscribed")
		g(descSubs, float64(w.Failed), "failed")
		g(descSubs, float64(w.Users-w.Subscribed-w.Failed), "pending")
		g(descInCall, float64(w.InCall))
		ctr(descNotifies, float64(w.Counts.Notifies-w.Counts.Ignored-w.Counts.Unknown), "read")
		ctr(descNotifies, float64(w.Counts.Ignored), "unreadable")
		ctr(descNotifies, float64(w.Counts.Unknown), "unknown_subscription")
	}
	for _, t := range r.Targets {
		g(descPending, float64(t.Pending), t.Name)
		ctr(descSent, float64(t.Sent), t.Name)
		ctr(descFailed, float64(t.Failed), t.Name)
		ctr(descDropped, float64(t.Dropped), t.Name)
		up := 1.0
		if t.Down {
			up = 0
		}
		g(descUp, up, t.Name)
		hist(descLatency, t.ChangeLatency, t.Name)
		if r.PBXWatch != nil {
			hist(descPBXLatency, t.PBXLatency, t.Name)
		}
	}
}

// Health reports whether at least one account has completed a good poll within
// healthCycles cycle intervals (counted from the start before the first one).
func (a *App) Health() (ok bool, reason string) {
	var started time.Time
	if p := a.started.Load(); p != nil {
		started = *p
	}
	return health(a.report(), a.clk.Now(), started)
}

func health(r StatusReport, now, started time.Time) (bool, string) {
	if len(r.Accounts) == 0 || !r.TeamsEnabled {
		return true, "no account polls"
	}
	var reasons []string
	for _, ac := range r.Accounts {
		p := ac.Polling
		last := p.LastGoodCycle
		if last.IsZero() || last.Before(started) {
			last = started
		}
		limit := max(time.Duration(healthCycles)*p.CycleInterval, healthFloor)
		if now.Sub(last) <= limit {
			return true, fmt.Sprintf("account %s polled %s ago", ac.ID, now.Sub(last).Round(time.Second))
		}
		cause := p.LastError
		if ac.Sign.LastError != "" {
			cause = ac.Sign.LastError
			if ac.Sign.Fix != "" {
				cause += "; fix: " + ac.Sign.Fix
			}
		}
		reasons = append(reasons, fmt.Sprintf("account %s: no good poll for %s: %s", ac.ID, now.Sub(last).Round(time.Second), cause))
	}
	return false, strings.Join(reasons, "; ")
}

// serveMetrics serves /metrics and /healthz on addr until ctx ends.
func (a *App) serveMetrics(ctx context.Context, addr string) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, reason := a.Health()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(map[string]any{"ok": ok, "reason": reason})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint %s (set [General] MetricsAddr to a free port, or off): %w", addr, err)
	}
	a.metricsAddr.Store(ln.Addr().String())
	a.log.Info("Metrics and health endpoint listening", "metrics", "http://"+ln.Addr().String()+"/metrics", "health", "http://"+ln.Addr().String()+"/healthz")
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// MetricsAddr is where /metrics listens, once Run has started it ("" before).
func (a *App) MetricsAddr() string {
	v, _ := a.metricsAddr.Load().(string)
	return v
}
