package main

import (
	"encoding/json"
	"fmt"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
)

func cmdPresence(g globals, args []string) int {
	if len(args) != 2 || args[0] != "get" {
		fmt.Fprintln(g.stderr, "Usage: presencebridge presence get UPN\n\nPrints one user's live Teams presence, the last state kept, what each target last accepted,\nand, where the PBX is watched, the PBX's own state and the session presencebridge holds in Teams, as JSON.\nWhen Teams cannot be read (e.g. the sign-in is dead) it prints the rest with liveError and fix, and exits 4.")
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

	var rep app.PresenceReport
	code, err := viaAppOrService(g, cfg, logger,
		func(a *app.App) (err error) { rep, err = a.Presence(ctx, upn); return err },
		func(c *control.Client) error { return c.Presence(ctx, upn, &rep) })
	if code != exitOK {
		return code
	}
	if err != nil {
		fmt.Fprintf(g.stderr, "presencebridge presence get: %v\n", err)
		return exitFailure
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Fprintln(g.stdout, string(out))
	if rep.LiveError != "" {
		// The kept state and the deliveries are shown; the live read is not.
		fmt.Fprintf(g.stderr, "presencebridge presence get: live presence not read: %s\n", rep.LiveError)
		return exitNotReady
	}
	return exitOK
}
