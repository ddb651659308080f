package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/presencebridge/presencebridge/internal/app/verify"
)

func cmdVerify(g globals, args []string) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	offline := fs.Bool("offline", false, "only the checks that need no network (INI, users file, budget)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	fs.Usage = func() {
		fmt.Fprintln(g.stderr, "Usage: presencebridge verify [--offline] [--json]\n\nChecks the configuration, the users file, the budget, the network path to sign-in\nand Graph, each account's token and permissions, a sample of users and the PBX\ntargets. One line per check; every FAIL says how to fix it. Exits 1 if a check failed.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := signalContext()
	defer stop()
	rs := verify.Run(ctx, verify.Options{ConfigPath: g.configPath, Offline: *offline})
	if *asJSON {
		out, _ := json.MarshalIndent(rs, "", "  ")
		fmt.Fprintln(g.stdout, string(out))
	} else {
		for _, r := range rs {
			lines := strings.Split(r.Detail, "\n")
			fmt.Fprintf(g.stdout, "%-4s  %-32s %s\n", r.Status, r.Check, lines[0])
			for _, l := range lines[1:] {
				fmt.Fprintf(g.stdout, "      %-32s %s\n", "", l)
			}
			if r.Fix != "" {
				fmt.Fprintf(g.stdout, "      %-32s fix: %s\n", "", r.Fix)
			}
		}
	}
	if len(rs) > 0 && rs[0].Check == "configuration" && rs[0].Status == verify.Fail {
		return exitConfig
	}
	if verify.Failed(rs) {
		return exitFailure
	}
	return exitOK
}
