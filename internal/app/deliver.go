package app

import (
	"context"
	"fmt"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/push"
	"github.com/presencebridge/presencebridge/internal/push/cti"
	"github.com/presencebridge/presencebridge/internal/push/sip"
	"github.com/presencebridge/presencebridge/internal/store"
)

// staleKey is where an account's stale episode is kept in the accounts bucket, so
// that a restart during an outage still restores live states once polling works.
func staleKey(id string) string { return "_stale." + id }

// buildTargets makes the delivery targets configured in [SIP] and [HTTP].
func (a *App) buildTargets(cfg *config.Config) ([]push.Target, error) {
	var out []push.Target
	if cfg.SIP.Server != "" {
		t, err := a.newSIPTarget(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: [SIP]: %w", cfg.Path, err)
		}
		out = append(out, t)
	}
	if cfg.HTTP.URL != "" {
		headers := map[string]string{}
		for k, v := range cfg.HTTP.Headers {
			headers[k] = v.Reveal()
		}
		t, err := cti.New(cti.Options{URL: cfg.HTTP.URL, Headers: headers, Batch: cfg.HTTP.Batch,
			Concurrency: cfg.HTTP.Concurrency, CAFile: cfg.HTTP.CAFile, ClientCertFile: cfg.HTTP.ClientCertFile,
			ClientKeyFile: cfg.HTTP.ClientKeyFile, Timeout: cfg.HTTP.Timeout, Logger: a.log.With("target", "http")})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Path, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// SyncReport is what sync-all did.
type SyncReport struct {
	Users   int      `json:"users"`   // users in the users file with an account
	Queued  int      `json:"queued"`  // states queued for every target
	NoState int      `json:"noState"` // users whose presence has not been read yet
	Targets []string `json:"targets"`
}

// SyncAll queues every user's current state (the stale fallback for an account
// that is stale) for every target, whether it changed or not.
func (a *App) SyncAll(ctx context.Context) (SyncReport, error) {
	rep := SyncReport{Users: len(a.byUPN), Targets: a.dispatcher.Targets()}
	if len(rep.Targets) == 0 {
		return rep, fmt.Errorf("no delivery target is configured; set [SIP] Server or [HTTP] URL in %s", a.cfg.Path)
	}
	var items []push.Item
	now := a.clk.Now().UTC()
	for _, acc := range a.accounts {
		stale := acc.isStale()
		for i := range acc.users {
			u := &acc.users[i]
			var st presence.State
			if found, err := a.db.Get(store.BucketPresence, u.UPN, &st); err != nil {
				return rep, err
			} else if !found {
				rep.NoState++
				continue
			}
			m := a.cfg.Mapping.Map(st)
			if stale {
				m = a.cfg.Mapping.Stale()
			}
			items = append(items, push.Item{User: *u, State: st, Mapped: m, Reason: push.ReasonSync, Queued: now})
		}
	}
	rep.Queued = len(items)
	if err := a.dispatcher.Enqueue(ctx, items); err != nil {
		return rep, err
	}
	a.log.Info("Sync all: every user's state queued for every target", "queued", rep.Queued, "noStateYet", rep.NoState, "targets", rep.Targets)
	return rep, nil
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
func (a *App) newSIPTarget(cfg *config.Config) (push.Target, error) {
	return sip.New(sip.Options{Transport: cfg.SIP.Transport, Server: cfg.SIP.Server, OutboundProxy: cfg.SIP.OutboundProxy,
		FromURI: cfg.SIP.From, Username: cfg.SIP.Username, Password: cfg.SIP.Password.Reveal(), CAFile: cfg.SIP.CAFile,
		ServerName: cfg.SIP.ServerName, Expires: cfg.SIP.Expires, Concurrency: cfg.SIP.Concurrency, Rate: cfg.SIP.Rate,
		Timeout: cfg.SIP.Timeout, ETags: sip.BoltPublications(a.db), Clock: a.clk, Logger: a.log.With("target", "sip")})
}

// removeDeparted queues a removal for users that were delivered to a target but are
// no longer in the users file, so the PBX stops showing their last state.
func (a *App) removeDeparted(ctx context.Context) error {
	shown, err := push.BoltOutbox(a.db).Shown()
	if err != nil {
		return err
	}
	var items []push.Item
	now := a.clk.Now().UTC()
	for upn, d := range shown {
		if _, ok := a.byUPN[upn]; !ok {
			items = append(items, push.Item{User: d.User, State: d.State, Mapped: d.Mapped, Reason: push.ReasonRemove, Queued: now})
		}
	}
	if len(items) == 0 {
		return nil
	}
	a.log.Info("Users left the users file; withdrawing their presence from the PBX", "users", len(items))
	return a.dispatcher.Enqueue(ctx, items)
}

// staleLoop applies [Delivery] StaleAfter: an account that has not completed a good
// cycle for that long has its users shown as the [Mapping] Stale rule; the first
// good cycle after that queues their live states again.
func (a *App) staleLoop(ctx context.Context) error {
	after := a.cfg.Delivery.StaleAfter
	tick := min(max(after/4, time.Second), 15*time.Second)
	for {
		a.checkStale(ctx, after)
		if err := a.clk.Sleep(ctx, tick); err != nil {
			return nil
		}
	}
}

func (a *App) checkStale(ctx context.Context, after time.Duration) {
	now := a.clk.Now()
	var started time.Time
	if p := a.started.Load(); p != nil {
		started = *p
	}
	for _, acc := range a.accounts {
		if len(acc.users) == 0 {
			continue
		}
		st := acc.poller.Status()
		last := st.LastGoodCycle
		if last.IsZero() || last.Before(started) && acc.isStale() {
			last = started
		}
		since := acc.staleSince()
		switch {
		case since.IsZero() && now.Sub(last) > after:
			acc.setStale(now)
			_ = a.db.Put(store.BucketAccounts, staleKey(acc.cfg.ID), now.UTC())
			a.log.Warn("Account has not read presence for too long; its users are shown as stale on the PBX",
				"account", acc.cfg.ID, "lastGoodRead", st.LastGoodCycle, "staleAfter", after, "cause", st.LastError)
			a.queueAccount(ctx, acc, push.ReasonStale)
		case !since.IsZero() && st.LastGoodCycle.After(since):
			acc.setStale(time.Time{})
			_ = a.db.Delete(store.BucketAccounts, staleKey(acc.cfg.ID))
			a.log.Info("Account reads presence again; its users' live states are sent", "account", acc.cfg.ID)
			a.queueAccount(ctx, acc, push.ReasonSync)
		}
	}
}

// queueAccount queues every user of acc: the stale fallback, or the last state read.
func (a *App) queueAccount(ctx context.Context, acc *account, reason string) {
	now := a.clk.Now().UTC()
	items := make([]push.Item, 0, len(acc.users))
	for i := range acc.users {
		u := acc.users[i]
		var st presence.State
		found, _ := a.db.Get(store.BucketPresence, u.UPN, &st)
		var m presence.Mapped
		switch {
		case reason == push.ReasonStale:
			m = a.cfg.Mapping.Stale()
		case found:
			m = a.cfg.Mapping.Map(st)
		default:
			continue
		}
		items = append(items, push.Item{User: u, State: st, Mapped: m, Reason: reason, Queued: now})
	}
	if err := a.dispatcher.Enqueue(ctx, items); err != nil {
		a.log.Error("Queueing states failed", "account", acc.cfg.ID, "err", err)
	}
}

func (acc *account) isStale() bool { return !acc.staleSince().IsZero() }

func (acc *account) staleSince() time.Time {
	acc.mu.Lock()
	defer acc.mu.Unlock()
	return acc.stale
}

func (acc *account) setStale(t time.Time) {
	acc.mu.Lock()
	defer acc.mu.Unlock()
	acc.stale = t
}
