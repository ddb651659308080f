package main

import (
	"errors"
	"fmt"

	"github.com/presencebridge/presencebridge/internal/sim/bench"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
)

// The simulator's commands live in internal/sim; these wire them in.
func cmdSimulate(g globals, args []string) int {
	return simExit(g, "simulate", simulate.Main(args, g.stdout, g.stderr))
}

func cmdBench(g globals, args []string) int {
	return simExit(g, bench.Command(args), bench.Main(args, g.stdout, g.stderr))
}

// simExit prints the error of a command of internal/sim as "presencebridge <name>:
// <error>" and gives its exit code: exitUsage for a bad command line (which the
// flag package may have printed already), exitFailure for any other error.
func simExit(g globals, name string, err error) int {
	var usage *simulate.UsageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		if !usage.Printed {
			fmt.Fprintf(g.stderr, "presencebridge %s: %v\n", name, err)
		}
		return exitUsage
	default:
		fmt.Fprintf(g.stderr, "presencebridge %s: %v\n", name, err)
		return exitFailure
	}
}
