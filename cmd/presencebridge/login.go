package main

import (
	"flag"
	"fmt"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
)

func cmdLogin(g globals, args []string) int {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	account := fs.String("account", "", "the [Account.ID] to sign in (may be left out when only one is configured)")
	fs.Usage = func() {
		fmt.Fprintln(g.stderr, "Usage: presencebridge login [--account ID]\n\nSigns an account in with the device-code flow (or checks its client credentials)\nand keeps the tokens in the state file, so `run` never asks again.")
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
	show := func(msg string) { fmt.Fprintln(g.stdout, msg) }

	var id auth.Identity
	code, err := viaAppOrService(g, cfg, logger,
		func(a *app.App) (err error) { id, err = a.Login(ctx, *account, show); return err },
		// The service holds the state file: it runs the sign-in and stores the tokens.
		func(c *control.Client) error { return c.Login(ctx, *account, show, &id) })
	if code != exitOK {
		return code
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge login: %v\n", err)
		return exitFailure
	}
	who := id.Username
	if who == "" {
		who = "the app registration"
	}
	fmt.Fprintf(g.stdout, "Signed in as %s (tenant %s). Tokens are kept in %s; `presencebridge run` will not ask again.\n", who, id.TenantID, cfg.StateFile)
	return exitOK
}
