package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/presencebridge/presencebridge/internal/app"
	"github.com/presencebridge/presencebridge/internal/app/control"
	"github.com/presencebridge/presencebridge/internal/store"
)

const usersUsage = `Usage: presencebridge users apply [--allow-mass-removal]

Checks the users file and has the service use it now (the service also picks up
an edit by itself). A users file that lists nobody, or that would take more than
half of the users off the PBX (an export that failed), is refused and the running
list stays; --allow-mass-removal confirms that this very file is meant, and the
users it no longer lists are withdrawn from the PBX.
`

func cmdUsers(g globals, args []string) int {
	if len(args) == 0 || args[0] != "apply" {
		fmt.Fprint(g.stderr, usersUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("users apply", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	allow := fs.Bool("allow-mass-removal", false, "confirm a users file that lists nobody or takes more than half of the users off the PBX")
	fs.Usage = func() { fmt.Fprint(g.stderr, usersUsage); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	cfg := loadConfig(g)
	if cfg == nil {
		return exitConfig
	}
	rep, err := app.ConfirmUsers(cfg, *allow)
	switch {
	case errors.Is(err, store.ErrInUse):
		return usersApplyRemote(g, cfg.StateFile, app.KeyFile(cfg), *allow)
	case errors.Is(err, app.ErrConfig):
		fmt.Fprintf(g.stderr, "presencebridge users apply: %v\n", err)
		return exitConfig
	case err != nil:
		fmt.Fprintf(g.stderr, "presencebridge users apply: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(g.stdout, "%s: %d users", rep.File, rep.Users)
	if rep.Skipped > 0 {
		fmt.Fprintf(g.stdout, " (%d rows skipped: presencebridge verify names them)", rep.Skipped)
	}
	fmt.Fprintf(g.stdout, "; the PBX shows %d users, %d of them no longer listed.\n", rep.Shown, rep.Removed)
	if rep.Confirmed {
		fmt.Fprintln(g.stdout, "Confirmed: when the service starts it withdraws the presence of the users no longer listed.")
	} else {
		fmt.Fprintf(g.stdout, "Accepted: %s.\n", rep.Result)
	}
	return exitOK
}

// usersApplyRemote asks the running service to reload with the users file.
func usersApplyRemote(g globals, stateFile, keyFile string, allow bool) int {
	c, err := control.NewClient(keyFile)
	if err == nil {
		result, err := askReload(c, control.ReloadRequest{AllowMassRemoval: allow})
		if err == nil {
			fmt.Fprintf(g.stdout, "presencebridge users apply: %s\n", result)
			return exitOK
		}
		fmt.Fprintf(g.stderr, "presencebridge users apply: %v\n", err)
		return exitConfig
	}
	if errors.Is(err, control.ErrNotRunning) {
		err = errNoServiceAnswers(stateFile)
	}
	fmt.Fprintf(g.stderr, "presencebridge users apply: %v\n", err)
	return exitFailure
}
