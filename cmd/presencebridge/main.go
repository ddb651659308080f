// Command presencebridge brings Microsoft Teams presence into on-premises phone
// systems. See README.md for the commands and Presence.ini.example for the settings.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/emiago/sipgo/sip"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes. Scripts and the service manager tell failures apart by them.
const (
	exitOK       = 0
	exitFailure  = 1 // the command ran and failed
	exitUsage    = 2 // bad command line
	exitConfig   = 3 // Presence.ini or the users file is invalid
	exitNotReady = 4 // e.g. sign-in needed
	exitInUse    = 5 // another presencebridge holds the state file (the service is already running)
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `presencebridge brings Microsoft Teams presence into on-premises phone systems.

Usage:
  presencebridge [--config PATH] <command> [arguments]

Commands:
  run [--service]         poll Teams presence and deliver changes to the PBX (the service's job)
  login [--account ID]    sign in with the device-code flow; tokens are kept in the state file
  presence get UPN        print one user's live Teams presence, and what each target last got, as JSON
  status [--json]         show accounts, sign-in state, users, the last poll cycle and the targets
  sync-all [--wait 2m]    send every user's current state to every target, changed or not
  users apply [--allow-mass-removal]
                          have the service use the users file now; confirm one that takes most users off the PBX
  config set K=V ...      set keys in Presence.ini in place (Account.main.TenantID=...), secrets encrypted
  secret encrypt          read a secret on stdin, print the encrypted value to paste into Presence.ini
  verify [--offline]      check config, users, budget, network, tokens, permissions and targets; each FAIL with its fix
  service <action>        install, uninstall, start, stop, restart, status or reload the service
  simulate [flags]        run the simulated Microsoft tenant (login + Graph), optionally with a PBX side
  bench [delivery|calls] [flags]
                          poll a simulated tenant of many users, deliver a burst to the PBX, or show
                          calls through Kamailio in Teams; print the figures
  version                 print the version
  help                    print this text

The configuration file is %s by default;
set --config or the PRESENCEBRIDGE_CONFIG environment variable to use another.
`

// command is one subcommand: it gets the global options and its own arguments.
type command func(g globals, args []string) int

type globals struct {
	configPath string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
}

// defaultGCPercent is the garbage collector's GOGC unless GOGC is set: the
// heap may grow a quarter of its live data before a collection (Go's default
// is all of it), so the peak stays near the live data: 200,000 users (about
// 100 MiB live) peak at 250 MiB with the state file's pages, against 270 MiB
// at 50 and more at Go's default, for about a tenth of a core more. No soft
// memory limit: one below the live data has the collector run without pause,
// as the 64 MiB one did at 200,000 users (60% of presencebridge's CPU).
const defaultGCPercent = 25

func run(args []string, stdout, stderr io.Writer) int {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	// sipgo's transport layer logs its own connection bookkeeping ("ref went
	// negative") through a package-wide logger; errors from it still show.
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	fs := flag.NewFlagSet("presencebridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := defaultConfigPath()
	if env := os.Getenv("PRESENCEBRIDGE_CONFIG"); env != "" {
		def = env
	}
	g := globals{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	fs.StringVar(&g.configPath, "config", def, "path of Presence.ini")
	fs.Usage = func() { fmt.Fprintf(stderr, usage, defaultConfigPath()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	commands := map[string]command{
		"run":      cmdRun,
		"login":    cmdLogin,
		"presence": cmdPresence,
		"status":   cmdStatus,
		"sync-all": cmdSyncAll,
		"users":    cmdUsers,
		"verify":   cmdVerify,
		"secret":   cmdSecret,
		"service":  cmdService,
		"config":   cmdConfig,
		"simulate": cmdSimulate,
		"bench":    cmdBench,
		"version":  cmdVersion,
	}
	name := fs.Arg(0)
	if name == "help" {
		fmt.Fprintf(stdout, usage, defaultConfigPath())
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "presencebridge: unknown command %q\n\n", name)
		fs.Usage()
		return exitUsage
	}
	return cmd(g, fs.Args()[1:])
}

func defaultConfigPath() string {
	if runtime.GOOS == "windows" {
		pd := os.Getenv("ProgramData")
		if pd == "" {
			pd = `C:\ProgramData`
		}
		return pd + `\presencebridge\Presence.ini`
	}
	return "/etc/presencebridge/Presence.ini"
}

func cmdVersion(g globals, _ []string) int {
	fmt.Fprintf(g.stdout, "presencebridge %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
