package app

import (
	"context"
	"fmt"
	"time"

	"github.com/presencebridge/presencebridge/internal/compose"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/asterisk"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
)

// buildTargets makes the delivery targets configured in [SIP], [HTTP] and
// [Asterisk].
func (a *App) buildTargets(cfg *config.Config) ([]delivery.Target, error) {
	var out []delivery.Target
	if cfg.SIP.Server != "" {
		t, err := a.newSIPTarget(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: [SIP]: %w", cfg.Path, err)
		}
		out = append(out, t)
	}
	if cfg.HTTP.URL != "" {
		t, err := cti.New(cti.Options{Settings: cfg.HTTP, Logger: a.log.With("target", "http")})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Path, err)
		}
		out = append(out, t)
	}
	if cfg.Asterisk.Enabled() {
		t, err := asterisk.New(asterisk.Options{Settings: cfg.Asterisk, Clock: a.clk, Logger: a.log.With("target", "asterisk")})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Path, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// SyncAll queues every user's current state (the stale fallback for an account
// that is stale) for every target, whether it changed or not.
func (a *App) SyncAll(ctx context.Context) (compose.SyncReport, error) {
	if len(a.dispatcher.Targets()) == 0 {
		return compose.SyncReport{}, fmt.Errorf("no delivery target is configured; set [SIP] Server, [HTTP] URL or [Asterisk] URL (Mode = ami: Address) in %s", a.cfg.Path)
	}
	rep, err := a.composer.Sync(ctx, a.groups())
	rep.Targets = a.dispatcher.Targets()
	return rep, err
}

// groups are the accounts' users.
func (a *App) groups() []compose.Group {
	out := make([]compose.Group, 0, len(a.accounts))
	for _, acc := range a.accounts {
		out = append(out, compose.Group{Account: acc.cfg.ID, Users: acc.users})
	}
	return out
}

// Pending counts the states a target has not accepted yet.
func (a *App) Pending(target string) int { return a.dispatcher.Pending(target) }

// DeliverPending runs the delivery targets, without polling, until every queued
// state is accepted or ctx ends (sync-all while the service is stopped).
func (a *App) DeliverPending(ctx context.Context, progress func(pending int)) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.dispatcher.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for {
		n := a.pendingAll()
		progress(n)
		if n == 0 {
			return nil
		}
		if err := a.clk.Sleep(ctx, 500*time.Millisecond); err != nil {
			return fmt.Errorf("%d states still queued: %w", n, err)
		}
	}
}

func (a *App) pendingAll() int {
	n := 0
	for _, t := range a.dispatcher.Targets() {
		n += a.dispatcher.Pending(t)
	}
	return n
}

// newSIPTarget builds the SIP publisher; its publications (ETags) are kept in the
// state file so that a restart modifies or removes them.
func (a *App) newSIPTarget(cfg *config.Config) (delivery.Target, error) {
	return sip.New(sip.Options{Settings: cfg.SIP, ETags: sip.BoltPublications(a.db), Clock: a.clk, Logger: a.log.With("target", "sip")})
}

// removeDeparted withdraws from the PBX the users who left the users file.
func (a *App) removeDeparted(ctx context.Context) error {
	_, err := a.dispatcher.WithdrawDeparted(ctx, func(upn string) bool { _, ok := a.byUPN[upn]; return ok })
	return err
}

// staleLoop applies [Delivery] StaleAfter to every account (compose.RunStale).
func (a *App) staleLoop(ctx context.Context) error {
	var started time.Time
	if p := a.started.Load(); p != nil {
		started = *p
	}
	watched := make([]compose.Watched, 0, len(a.accounts))
	for i, g := range a.groups() {
		poller := a.accounts[i].poller
		watched = append(watched, compose.Watched{Group: g,
			Reading: func() (time.Time, string) { st := poller.Status(); return st.LastGoodCycle, st.LastError }})
	}
	return a.composer.RunStale(ctx, a.cfg.Delivery.StaleAfter, started, watched)
}
