package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/control"
)

func cmdPresence(g globals, args []string) int {
	if len(args) != 2 || args[0] != "get" {
		fmt.Fprintln(g.stderr, "Usage: presencebridge presence get UPN\n\nPrints one user's live Teams presence (and the last state kept) as JSON.")
		return exitUsage
	}
	upn := args[1]
	cfg := loadConfig(g)
	if cfg == nil {
		return exitConfig
	}
	logger := newConsoleLogger(g.stderr, "warn")
	ctx, stop := signalContext()
	defer stop()

	a, inUse, code := openApp(g, cfg, logger)
	var rep app.PresenceReport
	var err error
	switch {
	case code != exitOK:
		return code
	case inUse:
		var c *control.Client
		c, err = control.NewClient(app.KeyFile(cfg))
		if err == nil {
			err = c.Presence(ctx, upn, &rep)
		}
		if errors.Is(err, control.ErrNotRunning) {
			err = fmt.Errorf("the state file %s is in use, but no service answers; stop the other presencebridge command and try again", cfg.StateFile)
		}
	default:
		defer a.Close()
		rep, err = a.Presence(ctx, upn)
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge presence get: %v\n", err)
		return exitFailure
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Fprintln(g.stdout, string(out))
	return exitOK
}
