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
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
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
// device-code account "demo", a 5 s poll interval and 10 resolves per second.
func CommandConfig(dir string) simconfig.Options {
	return simconfig.Options{
		Dir:               dir,
		Comment:           `Written by "presencebridge simulate" for its simulated tenant.`,
		WinningTechnology: "MSTeams",
		ControlAddr:       "127.0.0.1:0",
		MetricsAddr:       "127.0.0.1:0",
		NameFiles:         true,
		Interval:          5 * time.Second,
		ResolveRate:       10,
		AccountID:         "demo",
		Auth:              simconfig.AuthDeviceCode,
	}
}

// Main runs `presencebridge simulate` with args (what follows the command's name)
// until SIGINT or SIGTERM. Bad arguments return a *UsageError; other errors are
// the command's failure, for the caller to print after "presencebridge simulate: ".
func Main(args []string, stdout, stderr io.Writer) error {
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
	limit := fs.Int("throttle-limit", 1500, "Graph requests allowed per app per window before 429")
	window := fs.Duration("throttle-window", 30*time.Second, "throttle window")
	writeConfig := fs.String("write-config", "", "write Presence.ini, users.csv and the CA certificate for this tenant into this folder")
	fs.StringVar(&written.Auth, "auth", written.Auth, "sign-in of the account written by --write-config: devicecode or secret")
	seed := fs.Int64("seed", 1, "random seed of the presence patterns")
	fs.DurationVar(&written.Interval, "interval", written.Interval, "[Polling] Interval written by --write-config")
	fs.Float64Var(&written.ResolveRate, "resolve-rate", written.ResolveRate, "[Polling] ResolveRate written by --write-config")
	pbxAddr := fs.String("pbx", "", "also run a PBX-side HTTP receiver on this loopback address (e.g. 127.0.0.1:0), print what arrives, and point the written config's [HTTP] at it")
	kamWatch := fs.Int("kamailio", 0, "also run Kamailio as the PBX's SIP presence server, point the written config's [SIP] at it, and watch this many users (needs the kamailio package)")
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
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim, err := graphsim.New(graphsim.Options{
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
	pbx := &pbxSide{sim: sim, out: stderr}
	defer pbx.close()
	if *pbxAddr != "" {
		if err := pbx.startHTTP(*pbxAddr); err != nil {
			return err
		}
		logger.Info("PBX-side HTTP receiver ready", "url", pbx.httpURL)
	}
	if *kamWatch > 0 {
		if err := pbx.startKamailio(context.Background(), caDir, *kamWatch); err != nil {
			return fmt.Errorf("Kamailio: %w", err)
		}
		logger.Info("Kamailio ready as the PBX's SIP presence server", "udp", pbx.kam.UDP, "watching", *kamWatch)
	}
	if *writeConfig != "" {
		written.Dir, written.HTTPURL = *writeConfig, pbx.httpURL
		if pbx.kam != nil {
			written.SIPServer = pbx.kam.UDP
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

	<-ctx.Done()
	logger.Info("Simulated tenant stopping")
	return nil
}
