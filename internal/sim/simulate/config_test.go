package simulate_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// What `simulate --write-config` writes (CommandConfig, simconfig.Write) loads as the product loads
// it: the legacy keys, the files spelled out beside it, the control endpoint, a
// device-code account "demo", [Polling], the targets and the sections after them.
func TestWriteCommandConfig(t *testing.T) {
	sim := testkit.StartSim(t, graphsim.Options{Users: 3})
	dir := t.TempDir()
	o := simulate.CommandConfig(dir)
	o.Interval, o.ResolveRate = 2*time.Second, 40
	o.HTTPURL, o.SIPServer = "http://127.0.0.1:1/presence", "127.0.0.1:2"
	o.Extra = "[Delivery]\nRetryMin = 100ms"
	path, err := simconfig.Write(sim, o)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "Presence.ini") {
		t.Errorf("path %s, want Presence.ini in %s", path, dir)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.TeamsEnabled || cfg.WinningTechnology != config.WinningMSTeams || cfg.StateFile != filepath.Join(dir, "presencebridge.db") ||
		cfg.UsersFile != filepath.Join(dir, "users.csv") || cfg.ControlAddr != "127.0.0.1:0" || cfg.MetricsAddr != "127.0.0.1:0" {
		t.Errorf("TeamsEnabled %v, WinningTechnology %q, StateFile %s, UsersFile %s, ControlAddr %q, MetricsAddr %q; want the legacy keys, the files in %s and free loopback ports",
			cfg.TeamsEnabled, cfg.WinningTechnology, cfg.StateFile, cfg.UsersFile, cfg.ControlAddr, cfg.MetricsAddr, dir)
	}
	if cfg.PBX.Watching() {
		t.Errorf("[PBX] Watch %q without PBXWatch; want off", cfg.PBX.Watch.Watch)
	}
	if cfg.Microsoft.LoginURL != sim.URL() || cfg.Proxy.URL != "direct" || cfg.Proxy.CAFile != filepath.Join(dir, "sim-ca.pem") {
		t.Errorf("[Microsoft] %+v, [Proxy] %+v; want the tenant, direct, its CA", cfg.Microsoft, cfg.Proxy)
	}
	if cfg.Polling.Interval != 2*time.Second || cfg.Polling.ResolveRate != 40 {
		t.Errorf("[Polling] %+v, want Interval 2s, ResolveRate 40", cfg.Polling)
	}
	if a := cfg.Accounts; len(a) != 1 || a[0].ID != "demo" || a[0].TenantID != sim.TenantID() || a[0].ClientID != graphsim.DefaultPublicApp ||
		a[0].Auth != config.AuthDeviceCode || a[0].Username != "presence.svc@contoso.example" {
		t.Errorf("accounts %+v, want demo signing in with the device code through the public app", a)
	}
	if cfg.HTTP.URL != o.HTTPURL || cfg.SIP.Server != o.SIPServer || cfg.Delivery.RetryMin != 100*time.Millisecond {
		t.Errorf("[HTTP] URL %q, [SIP] Server %q, [Delivery] RetryMin %s; want the targets and the Extra section", cfg.HTTP.URL, cfg.SIP.Server, cfg.Delivery.RetryMin)
	}
	if pem, err := os.ReadFile(cfg.Proxy.CAFile); err != nil || string(pem) != string(sim.CAPEM()) {
		t.Errorf("sim-ca.pem: %v; want the tenant's CA", err)
	}
	csv, err := os.ReadFile(cfg.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "UPN;SIP URI;Extension;Name\r\n"
	for i, u := range sim.Users() {
		want += fmt.Sprintf("%s;sip:%d@pbx.example;%d;%s\r\n", u.UPN, 1000+i, 1000+i, u.DisplayName)
	}
	if string(csv) != want {
		t.Errorf("users.csv:\n%q\nwant\n%q", csv, want)
	}

	o.Auth = "password"
	if _, err := simconfig.Write(sim, o); err == nil || !strings.Contains(err.Error(), `Auth "password": use secret or devicecode`) {
		t.Errorf("Auth password: %v, want an error naming the value and the choices", err)
	}
}

// With SecretUsers, the device-code account gets a second account beside it that
// signs in with the client secret and serves the first users, named in the users
// file's Account column; PBXWatch writes [PBX] Watch. What is written loads, and
// each user is served by the account the column names.
func TestWriteSecretUsersAndWatch(t *testing.T) {
	sim := testkit.StartSim(t, graphsim.Options{Users: 4})
	o := simulate.CommandConfig(t.TempDir())
	o.SecretUsers, o.SIPServer, o.PBXWatch = 2, "127.0.0.1:5060", "dialog"
	path, err := simconfig.Write(sim, o)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PBX.Watch.Watch != "dialog" || cfg.SIP.Server != o.SIPServer {
		t.Errorf("[PBX] Watch %q, [SIP] Server %q; want dialog and %s", cfg.PBX.Watch.Watch, cfg.SIP.Server, o.SIPServer)
	}
	a := cfg.Accounts
	if len(a) != 2 || a[0].ID != "demo" || a[0].Auth != config.AuthDeviceCode ||
		a[1].ID != simconfig.SecretAccountID || a[1].Auth != config.AuthSecret || a[1].ClientID != graphsim.DefaultDaemonApp || a[1].TenantID != sim.TenantID() {
		t.Fatalf("accounts %+v; want demo (device code) and app (the daemon app's secret)", a)
	}
	// The device-code account cannot write: the loader warns about its users' calls.
	if w := strings.Join(cfg.Warnings, "\n"); !strings.Contains(w, "[Account.demo] signs in with the device code") {
		t.Errorf("warnings %q; want the one about the device-code account's users' calls", w)
	}
	list, _, err := users.Load(cfg.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"app", "app", "demo", "demo"}
	for i, u := range list {
		acc, err := cfg.AccountFor(u)
		if err != nil || acc.ID != want[i] || u.SIPURI != simconfig.SIPURI(i) {
			t.Errorf("user %d %s (%s): account %v, %v; want %s and %s", i, u.UPN, u.SIPURI, acc, err, want[i], simconfig.SIPURI(i))
		}
	}

	for _, bad := range []struct {
		change func(*simconfig.Options)
		err    string
	}{
		{func(o *simconfig.Options) { o.Auth = simconfig.AuthSecret }, "SecretUsers 2: a number of users, 0 or more, for a second account beside a device-code account"},
		{func(o *simconfig.Options) { o.SecretUsers = -1 }, "SecretUsers -1:"},
		{func(o *simconfig.Options) { o.SIPServer = "" }, `PBXWatch "dialog" needs SIPServer`},
	} {
		o := simulate.CommandConfig(t.TempDir())
		o.SecretUsers, o.SIPServer, o.PBXWatch = 2, "127.0.0.1:5060", "dialog"
		bad.change(&o)
		if _, err := simconfig.Write(sim, o); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("Write: %v; want an error containing %q", err, bad.err)
		}
	}
}
