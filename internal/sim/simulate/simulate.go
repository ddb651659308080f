// Package simulate is the `presencebridge simulate` command: the simulated Microsoft
// tenant (graphsim: login and Graph over HTTPS on loopback) and, on request, a
// simulated PBX side (an HTTP CTI receiver and a real Kamailio) that prints what
// arrives with its latency from the Teams change. It also writes the Presence.ini,
// users.csv and CA file that point presencebridge at such a tenant, with the
// writer in simconfig that tests use too.
//
// It ships in the binary because `make demo` and `presencebridge bench` need it.
package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
)

// Ready is the line `simulate` prints on stdout, as JSON, once it is listening, for
// scripts and for `bench`, which runs the simulated tenant as a child process.
type Ready struct {
	URL       string `json:"url"`
	Authority string `json:"authority"`
	GraphURL  string `json:"graphURL"`
	TenantID  string `json:"tenantID"`
	CAFile    string `json:"caFile"`
	Users     int    `json:"users"`
	// HTTPURL is the PBX side's CTI receiver (--pbx), SIPServer its Kamailio
	// (--kamailio, --kamailio-pbx) and CallURL the endpoint that places calls
	// (--pbx with --kamailio-pbx): POST {"from","to","duration"}.
	HTTPURL   string `json:"httpURL,omitempty"`
	SIPServer string `json:"sipServer,omitempty"`
	CallURL   string `json:"callURL,omitempty"`
	// ArrivalsURL (--pbx) tells what arrived at the PBX side and which of the
	// tenant's changes each arrival shows (ArrivalsPath).
	ArrivalsURL string `json:"arrivalsURL,omitempty"`
}

// DaemonApp is the client id of the i-th (from 1) confidential app
// registration of `simulate --apps`: graphsim's daemon app, then the same name
// with "-2", "-3" and on. Each has the daemon app's client secret.
func DaemonApp(i int) string {
	if i <= 1 {
		return graphsim.DefaultDaemonApp
	}
	return fmt.Sprintf("%s-%d", graphsim.DefaultDaemonApp, i)
}

// UsageError is a bad command line; the caller exits with its usage code.
type UsageError struct {
	Err error
	// Printed says the flag package has already printed Err and the usage, so
	// the caller prints nothing more.
	Printed bool
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// CommandConfig is what `presencebridge simulate --write-config dir` writes with its
// default flags: the legacy keys, the control and metrics endpoints on free
// loopback ports (so a demo never fails on a port another program holds), a
// device-code account "demo", and the product's defaults for polling
// (Interval auto) and resolving.
func CommandConfig(dir string) simconfig.Options {
	return simconfig.Options{
		Dir:               dir,
		Comment:           `Written by "presencebridge simulate" for its simulated tenant.`,
		WinningTechnology: "MSTeams",
		ControlAddr:       "127.0.0.1:0",
		MetricsAddr:       "127.0.0.1:0",
		NameFiles:         true,
		AccountID:         "demo",
		Auth:              simconfig.AuthDeviceCode,
	}
}

// Main runs `presencebridge simulate` with args (what follows the command's name)
// until SIGINT or SIGTERM. Bad arguments return a *UsageError; other errors are
// the command's failure, for the caller to print after "presencebridge simulate: ".
func Main(args []string, stdout, stderr io.Writer) error {
	// The product's tighter garbage collection (cmd/presencebridge) is for
	// presencebridge; the simulated tenant takes Go's default, so it spends
	// less of the CPU a bench needs for presencebridge.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(100)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, stdout, stderr)
}

// Run is Main until ctx ends (tests end it; Main ends it on a signal).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	written := CommandConfig("")
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8443", "loopback address to listen on (port 0 picks a free one)")
	nUsers := fs.Int("users", 300, "number of simulated users")
	rate := fs.Float64("rate", 20, "presence changes per user per hour (0 = presence stays put)")
	approve := fs.Duration("approve-after", 3*time.Second, "approve device-code sign-ins automatically after this long (0 = only via the control API)")
	limit := fs.Int("throttle-limit", 1500, "presence requests (getPresencesByUserId, /users/{id}/presence, setPresence, clearPresence) allowed per app per window before 429; directory lookups have their own throttle")
	window := fs.Duration("throttle-window", 30*time.Second, "throttle window")
	writeConfig := fs.String("write-config", "", "write Presence.ini, users.csv and the CA certificate for this tenant into this folder")
	fs.StringVar(&written.Auth, "auth", written.Auth, "sign-in of the account written by --write-config: devicecode or secret")
	seed := fs.Int64("seed", 1, "random seed of the presence patterns")
	fs.DurationVar(&written.Interval, "interval", written.Interval, "[Polling] Interval written by --write-config (0: left out, so Interval is auto)")
	fs.Float64Var(&written.ResolveRate, "resolve-rate", written.ResolveRate, "[Polling] ResolveRate written by --write-config (0: left out, the default)")
	pbxAddr := fs.String("pbx", "", "also run a PBX-side HTTP receiver on this loopback address (e.g. 127.0.0.1:0), print what arrives, and point the written config's [HTTP] at it")
	kamWatch := fs.Int("kamailio", 0, "also run Kamailio as the PBX's SIP presence server, point the written config's [SIP] at it, and watch this many users (needs the kamailio package)")
	kamMemory := fs.Bool("kamailio-memory", false, "keep Kamailio's publications in memory instead of its db_text table, which it reads whole for every modification: for tens of thousands of users (a publication's refresh then notifies the watchers with an empty body)")
	nApps := fs.Int("apps", 1, "confidential app registrations with the client secret, each with its own throttle budget: "+graphsim.DefaultDaemonApp+", then "+DaemonApp(2)+" and on (for a configuration with several accounts, one app each)")
	kamPBX := fs.Bool("kamailio-pbx", false, "run Kamailio as a small PBX too (even with --kamailio 0): the simulated users' phones register and call each other through it (--call, POST "+CallPath+" on the --pbx address), each step is printed as a CALL line and each setPresence/clearPresence the tenant answers as a TEAMS line; the written config gets [PBX] Watch = dialog")
	var calls []scriptedCall
	fs.Func("call", "a scripted call on the PBX (needs --kamailio-pbx): `FROM:TO:AFTER:DURATION`, FROM's phone calls TO's AFTER after simulate is ready and hangs up DURATION after the answer, e.g. user00001:user00002:20s:8s (users by UPN or the name before the @); repeatable", func(v string) error {
		c, err := parseCall(v)
		if err == nil {
			calls = append(calls, c)
		}
		return err
	})
	fs.IntVar(&written.SecretUsers, "secret-users", 0, "with --auth devicecode, the written config has the first `N` users served by a second account, [Account."+simconfig.SecretAccountID+"], that signs in with the client secret of an app allowed to write presence, so their calls on the PBX show in Teams (a device-code account cannot write other users' presence)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: presencebridge simulate [flags]\n\nRuns the simulated Microsoft tenant (login and Graph over HTTPS) until interrupted.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return &UsageError{Err: err, Printed: true}
	}
	if written.Auth != simconfig.AuthDeviceCode && written.Auth != simconfig.AuthSecret {
		return &UsageError{Err: fmt.Errorf("--auth %q: use %s or %s", written.Auth, simconfig.AuthDeviceCode, simconfig.AuthSecret)}
	}
	if len(calls) > 0 && !*kamPBX {
		return &UsageError{Err: errors.New("--call needs --kamailio-pbx: the calls go through Kamailio as a small PBX")}
	}
	switch {
	case written.SecretUsers < 0 || written.SecretUsers > *nUsers:
		return &UsageError{Err: fmt.Errorf("--secret-users %d: use 0 to --users (%d)", written.SecretUsers, *nUsers)}
	case written.SecretUsers > 0 && written.Auth != simconfig.AuthDeviceCode:
		return &UsageError{Err: fmt.Errorf("--secret-users %d needs --auth %s: with --auth %s the one account signs in with the client secret already", written.SecretUsers, simconfig.AuthDeviceCode, written.Auth)}
	}
	if *nApps < 1 {
		return &UsageError{Err: fmt.Errorf("--apps %d: use 1 or more", *nApps)}
	}
	appRegs := []graphsim.App{{ClientID: graphsim.DefaultPublicApp, Public: true}}
	for i := 1; i <= *nApps; i++ {
		appRegs = append(appRegs, graphsim.App{ClientID: DaemonApp(i), Secret: graphsim.DefaultDaemonSecret})
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim, err := graphsim.New(graphsim.Options{
		Apps:                   appRegs,
		Addr:                   *addr,
		Users:                  *nUsers,
		ChangesPerUserPerHour:  *rate,
		DeviceCodeApproveAfter: *approve,
		ThrottleLimit:          *limit,
		ThrottleWindow:         *window,
		Seed:                   *seed,
		Logger:                 logger,
	})
	if err != nil {
		return err
	}
	var arrivals *arrivalLog
	if *pbxAddr != "" || *kamWatch > 0 || *kamPBX {
		arrivals = newArrivalLog(sim) // before the tenant starts: every user's state at start
	}
	if err := sim.Start(); err != nil {
		return err
	}
	defer sim.Close()

	ready := Ready{URL: sim.URL(), Authority: sim.Authority(), GraphURL: sim.GraphURL(), TenantID: sim.TenantID(), Users: *nUsers}
	caDir := *writeConfig
	if caDir == "" {
		caDir, err = os.MkdirTemp("", "presencebridge-sim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(caDir)
	}
	ready.CAFile = filepath.Join(caDir, simconfig.CAFileName)
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return err
	}
	if *writeConfig == "" { // otherwise simconfig.Write writes it with Presence.ini, below
		if err := os.WriteFile(ready.CAFile, sim.CAPEM(), 0o644); err != nil {
			return err
		}
	}
	if len(calls) > 0 {
		index := indexUsers(sim.Users())
		for _, c := range calls {
			for _, name := range []string{c.from, c.to} {
				if _, ok := index[strings.ToLower(name)]; !ok {
					return &UsageError{Err: fmt.Errorf("--call %s:%s: %q is not a simulated user (use a UPN or the name before the @, e.g. user00001)", c.from, c.to, name)}
				}
			}
		}
	}
	pbx := &pbxSide{sim: sim, log: arrivals, out: stderr}
	defer pbx.close()
	if *kamWatch > 0 || *kamPBX {
		if err := pbx.startKamailio(context.Background(), caDir, *kamWatch, *kamPBX, *kamMemory); err != nil {
			return fmt.Errorf("Kamailio: %w", err)
		}
		ready.SIPServer = pbx.kam.UDP
		if *kamPBX {
			pbx.startCalls()
			logger.Info("Kamailio ready as the PBX (calls between the simulated users' phones) and its SIP presence server", "udp", pbx.kam.UDP, "watching", *kamWatch)
		} else {
			logger.Info("Kamailio ready as the PBX's SIP presence server", "udp", pbx.kam.UDP, "watching", *kamWatch)
		}
	}
	if *pbxAddr != "" {
		if err := pbx.startHTTP(*pbxAddr); err != nil {
			return err
		}
		ready.HTTPURL = pbx.httpURL
		ready.ArrivalsURL = strings.TrimSuffix(pbx.httpURL, "/presence") + ArrivalsPath
		if *kamPBX {
			ready.CallURL = strings.TrimSuffix(pbx.httpURL, "/presence") + CallPath
		}
		logger.Info("PBX-side HTTP receiver ready", "url", pbx.httpURL, "calls", ready.CallURL)
	}
	if *writeConfig != "" {
		written.Dir, written.HTTPURL, written.SIPServer = *writeConfig, pbx.httpURL, ready.SIPServer
		if *kamPBX {
			written.PBXWatch = "dialog"
			if written.Auth == simconfig.AuthDeviceCode && written.SecretUsers == 0 {
				logger.Warn("The written account signs in with the device code, which cannot write other users' presence: calls on the PBX will not show in Teams; add --secret-users N or use --auth secret")
			}
		}
		path, err := simconfig.Write(sim, written)
		if err != nil {
			return err
		}
		logger.Info("Wrote a configuration for this tenant", "config", path)
	}
	line, _ := json.Marshal(ready)
	fmt.Fprintln(stdout, string(line))
	logger.Info("Simulated tenant ready", "url", ready.URL, "authority", ready.Authority, "users", *nUsers,
		"changesPerUserPerHour", *rate, "control", ready.URL+"/_sim/")

	if len(calls) > 0 {
		pbx.script(calls)
	}

	<-ctx.Done()
	logger.Info("Simulated tenant stopping")
	return nil
}
