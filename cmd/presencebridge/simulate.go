package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// simReady is the line `simulate` prints on stdout once it is listening, for scripts
// and for `bench`, which runs the simulated tenant as a child process.
type simReady struct {
	URL       string `json:"url"`
	Authority string `json:"authority"`
	GraphURL  string `json:"graphURL"`
	TenantID  string `json:"tenantID"`
	CAFile    string `json:"caFile"`
	Users     int    `json:"users"`
}

func cmdSimulate(g globals, args []string) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	addr := fs.String("addr", "127.0.0.1:8443", "loopback address to listen on (port 0 picks a free one)")
	nUsers := fs.Int("users", 300, "number of simulated users")
	rate := fs.Float64("rate", 20, "presence changes per user per hour (0 = presence stays put)")
	approve := fs.Duration("approve-after", 3*time.Second, "approve device-code sign-ins automatically after this long (0 = only via the control API)")
	limit := fs.Int("throttle-limit", 1500, "Graph requests allowed per app per window before 429")
	window := fs.Duration("throttle-window", 30*time.Second, "throttle window")
	writeConfig := fs.String("write-config", "", "write Presence.ini, users.csv and the CA certificate for this tenant into this folder")
	auth := fs.String("auth", "devicecode", "sign-in of the account written by --write-config: devicecode or secret")
	seed := fs.Int64("seed", 1, "random seed of the presence patterns")
	interval := fs.Duration("interval", 5*time.Second, "[Polling] Interval written by --write-config")
	resolveRate := fs.Float64("resolve-rate", 10, "[Polling] ResolveRate written by --write-config")
	pbxAddr := fs.String("pbx", "", "also run a PBX-side HTTP receiver on this loopback address (e.g. 127.0.0.1:0), print what arrives, and point the written config's [HTTP] at it")
	kamWatch := fs.Int("kamailio", 0, "also run Kamailio as the PBX's SIP presence server, point the written config's [SIP] at it, and watch this many users (needs the kamailio package)")
	fs.Usage = func() {
		fmt.Fprintln(g.stderr, "Usage: presencebridge simulate [flags]\n\nRuns the simulated Microsoft tenant (login and Graph over HTTPS) until interrupted.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *auth != "devicecode" && *auth != "secret" {
		fmt.Fprintf(g.stderr, "presencebridge simulate: --auth %q: use devicecode or secret\n", *auth)
		return exitUsage
	}
	logger := newConsoleLogger(g.stderr, "info")
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
		fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
		return exitFailure
	}
	if err := sim.Start(); err != nil {
		fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
		return exitFailure
	}
	defer sim.Close()

	ready := simReady{URL: sim.URL(), Authority: sim.Authority(), GraphURL: sim.GraphURL(), Users: *nUsers}
	ready.TenantID = ready.Authority[strings.LastIndexByte(ready.Authority, '/')+1:]
	caDir := *writeConfig
	if caDir == "" {
		caDir, err = os.MkdirTemp("", "presencebridge-sim-")
		if err != nil {
			fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
			return exitFailure
		}
		defer os.RemoveAll(caDir)
	}
	ready.CAFile = filepath.Join(caDir, "sim-ca.pem")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
		return exitFailure
	}
	if err := os.WriteFile(ready.CAFile, sim.CAPEM(), 0o644); err != nil {
		fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
		return exitFailure
	}
	pbx := &pbxSide{sim: sim, out: g.stderr}
	defer pbx.close()
	if *pbxAddr != "" {
		if err := pbx.startHTTP(*pbxAddr); err != nil {
			fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
			return exitFailure
		}
		logger.Info("PBX-side HTTP receiver ready", "url", pbx.httpURL)
	}
	if *kamWatch > 0 {
		if err := pbx.startKamailio(context.Background(), caDir, *kamWatch); err != nil {
			fmt.Fprintf(g.stderr, "presencebridge simulate: Kamailio: %v\n", err)
			return exitFailure
		}
		logger.Info("Kamailio ready as the PBX's SIP presence server", "udp", pbx.kam.UDP, "watching", *kamWatch)
	}
	if *writeConfig != "" {
		if err := writeSimConfig(*writeConfig, ready, sim, *auth, *interval, *resolveRate, pbx); err != nil {
			fmt.Fprintf(g.stderr, "presencebridge simulate: %v\n", err)
			return exitFailure
		}
		logger.Info("Wrote a configuration for this tenant", "config", filepath.Join(*writeConfig, "Presence.ini"))
	}
	line, _ := json.Marshal(ready)
	fmt.Fprintln(g.stdout, string(line))
	logger.Info("Simulated tenant ready", "url", ready.URL, "authority", ready.Authority, "users", *nUsers,
		"changesPerUserPerHour", *rate, "control", ready.URL+"/_sim/")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	logger.Info("Simulated tenant stopping")
	return exitOK
}

// writeSimConfig writes a Presence.ini and users.csv that point presencebridge at
// the simulated tenant, as a field engineer would for a real one.
func writeSimConfig(dir string, r simReady, sim *graphsim.Server, auth string, interval time.Duration, resolveRate float64, pbx *pbxSide) error {
	var csv strings.Builder
	csv.WriteString("UPN;SIP URI;Extension;Name\r\n")
	for i, u := range sim.Users() {
		fmt.Fprintf(&csv, "%s;sip:%d@pbx.example;%d;%s\r\n", u.UPN, 1000+i, 1000+i, u.DisplayName)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.csv"), []byte(csv.String()), 0o644); err != nil {
		return err
	}
	account := "ClientID = presencebridge-demo\nAuth = devicecode\nUsername = presence.svc@contoso.example\n"
	if auth == "secret" {
		account = "ClientID = presencebridge-daemon\nAuth = secret\nClientSecret = sim-secret\n"
	}
	ini := fmt.Sprintf(`; Written by "presencebridge simulate" for its simulated tenant.
MSTeamsPresence.Enable = 1
RichPresence.WinningTechnology = MSTeams

[General]
StateFile = presencebridge.db
UsersFile = users.csv
ControlAddr = 127.0.0.1:0

[Microsoft]
LoginURL = %s
GraphURL = %s

[Proxy]
URL = direct
CAFile = sim-ca.pem

[Polling]
Interval = %s
ResolveRate = %g

[Account.demo]
TenantID = %s
%s`, r.URL, r.GraphURL, interval, resolveRate, r.TenantID, account)
	if pbx.httpURL != "" {
		ini += "\n[HTTP]\nURL = " + pbx.httpURL + "\n"
	}
	if pbx.kam != nil {
		ini += "\n[SIP]\nServer = " + pbx.kam.UDP + "\n"
	}
	return os.WriteFile(filepath.Join(dir, "Presence.ini"), []byte(ini), 0o600)
}
