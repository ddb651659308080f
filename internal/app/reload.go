package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/users"
)

// ReloadOptions configure RunWithReload.
type ReloadOptions struct {
	// Options are those of every App; Config is the first configuration.
	Options
	// Check is how often Presence.ini and the users file are looked at (default 2 s).
	Check time.Duration
	// Trigger asks for a reload now (SIGHUP).
	Trigger <-chan struct{}
	// Opened, if set, is the first App, opened by the caller with Options (the
	// service opens it before it reports running, so that a second instance or a
	// state file it cannot open fails the start).
	Opened *App
}

// RunWithReload runs an App and, when Presence.ini or the users file changes (or
// Trigger fires), loads the new configuration: if it is valid the App is
// replaced (tokens, resolved ids, states and the outbox live in the state file,
// so nothing is lost); if not, the error is logged and the running App stays.
func RunWithReload(ctx context.Context, o ReloadOptions) error {
	if o.Check <= 0 {
		o.Check = 2 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	log := o.Logger
	cfg := o.Config
	sum := fingerprint(cfg.Path, cfg.UsersFile)
	// Every App's control endpoint asks this loop, whichever App is running.
	asks := make(chan reloadAsk)
	o.Reload = func(ctx context.Context, r control.ReloadRequest) error {
		ask := reloadAsk{req: r, reply: make(chan error, 1)}
		select {
		case asks <- ask:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-ask.reply:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		opts := o.Options
		opts.Config = cfg
		a := o.Opened
		if a != nil {
			o.Opened = nil
			a.reload = o.Reload // opened by the caller, before this loop was there to ask
		} else {
			var err error
			if a, err = Open(opts); err != nil {
				return err
			}
		}
		actx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()

		next, why, ended, runErr := waitForChange(ctx, o, a, &sum, done, asks)
		cancel()
		if !ended {
			runErr = <-done
		}
		a.Close()
		switch {
		case ctx.Err() != nil:
			return nil
		case next == nil:
			return runErr // Run ended by itself
		}
		log.Info("Configuration reloaded; presencebridge restarts its work with it", "why", why, "config", next.Path)
		cfg = next
		o.Reloaded = true
	}
}

// reloadAsk is a reload asked through the control endpoint (`presencebridge
// service reload`, `users apply`); reply gets nil when the new configuration is
// taken, or why not.
type reloadAsk struct {
	req   control.ReloadRequest
	reply chan error
}

// waitForChange returns a new valid configuration when the files change or a
// reload is asked for; next is nil when ctx ends or the App's Run returns (ended).
// running is the App that runs meanwhile; its state file tells which users the
// PBX shows.
func waitForChange(ctx context.Context, o ReloadOptions, running *App, sum *[32]byte, done <-chan error, asks <-chan reloadAsk) (next *config.Config, why string, ended bool, runErr error) {
	cur := running.cfg
	t := o.Clock.NewTicker(o.Check)
	defer t.Stop()
	// An edit is taken once the files look the same at two checks in a row: an
	// editor (or an export job) still writing would be read half-written.
	var changed [32]byte
	for {
		why = ""
		var ask *reloadAsk
		select {
		case <-ctx.Done():
			return nil, "", false, nil
		case err := <-done:
			return nil, "", true, err
		case <-t.C():
			switch s := fingerprint(cur.Path, cur.UsersFile); {
			case s == *sum:
			case s != changed:
				changed = s
			default:
				*sum = s
				why = "file changed"
			}
		case <-o.Trigger:
			why = "reload asked"
		case a := <-asks:
			why, ask = "reload asked", &a
		}
		if why == "" {
			continue
		}
		next, err := config.Load(cur.Path)
		var list []users.User
		var problems []users.Problem
		if err == nil {
			list, problems, err = users.Load(next.UsersFile) // rows with problems are reported by the new App
		}
		switch {
		case err != nil:
		case ask != nil && ask.req.AllowMassRemoval:
			_, err = confirmUsers(running.db, next.UsersFile, list, len(problems), true)
		case o.RefuseMassRemoval:
			_, err = checkUsers(running.db, next.UsersFile, list)
		}
		if err != nil {
			o.Logger.Error("Reload refused: the edited configuration has errors; the running configuration stays", "err", err.Error())
			if ask != nil {
				ask.reply <- fmt.Errorf("reload refused, the running configuration stays: %w", err)
			}
			continue
		}
		// The answer goes before the App closes: the App's control endpoint is
		// what carries it.
		if ask != nil {
			ask.reply <- nil
		}
		*sum = fingerprint(cur.Path, next.UsersFile)
		return next, why, false, nil
	}
}

// fingerprint hashes the INI and the users file (a missing file hashes as empty).
func fingerprint(paths ...string) [32]byte {
	h := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				fmt.Fprint(h, err.Error())
			}
			continue
		}
		io.Copy(h, f)
		f.Close()
		h.Write([]byte{0})
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
