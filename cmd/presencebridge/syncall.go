package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/compose"
)

func cmdSyncAll(g globals, args []string) int {
	fs := flag.NewFlagSet("sync-all", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	wait := fs.Duration("wait", 2*time.Minute, "when the service is stopped: how long to deliver before giving up (the rest stays queued for the service)")
	fs.Usage = func() {
		fmt.Fprintln(g.stderr, "Usage: presencebridge sync-all [--wait 2m]\n\nSends every user's current state to every target ([SIP], [HTTP], [Asterisk]), changed or not.\nWith the service running, the service sends them; otherwise this command does, until done or --wait.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg := loadConfig(g)
	if cfg == nil {
		return exitConfig
	}
	logger := newConsoleLogger(g.stderr, "warn")
	ctx, stop := signalContext()
	defer stop()

	var rep compose.SyncReport
	ranHere := false
	code, err := viaAppOrService(g, cfg, logger,
		func(a *app.App) error {
			var err error
			if rep, err = a.SyncAll(ctx); err != nil {
				return err
			}
			ranHere = true
			dctx, cancel := context.WithTimeout(ctx, *wait)
			defer cancel()
			last := -1
			return a.DeliverPending(dctx, func(n int) {
				if n != last {
					fmt.Fprintf(g.stdout, "  %d states still to deliver\n", n)
					last = n
				}
			})
		},
		func(c *control.Client) error { return c.SyncAll(ctx, &rep) })
	if code != exitOK {
		return code
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge sync-all: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(g.stdout, "Queued %d of %d users for %v", rep.Queued, rep.Users, rep.Targets)
	if rep.NoState > 0 {
		fmt.Fprintf(g.stdout, "; %d have no presence read yet and go with the first poll", rep.NoState)
	}
	if ranHere {
		fmt.Fprintln(g.stdout, "; all delivered.")
	} else {
		fmt.Fprintln(g.stdout, "; the running service delivers them (see `presencebridge status`).")
	}
	return exitOK
}
