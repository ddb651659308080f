package testkit

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/users"
)

// What WriteSimConfig writes loads as the product loads it, names every user of
// the tenant and reaches the tenant over TLS with the CA file it names.
func TestWriteSimConfig(t *testing.T) {
	sim := StartSim(t, graphsim.Options{Users: 3})
	path := WriteSimConfig(t, sim, SimConfig{})
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Microsoft.LoginURL != sim.URL() || cfg.Microsoft.GraphURL != sim.GraphURL() || cfg.Proxy.URL != "direct" ||
		cfg.ControlAddr != "" || cfg.MetricsAddr != "" {
		t.Errorf("[Microsoft] %+v, [Proxy] URL %q, ControlAddr %q, MetricsAddr %q; want the tenant's URLs, direct, no endpoints",
			cfg.Microsoft, cfg.Proxy.URL, cfg.ControlAddr, cfg.MetricsAddr)
	}
	if len(cfg.Accounts) != 1 {
		t.Fatalf("accounts %+v, want main", cfg.Accounts)
	}
	if a := cfg.Accounts[0]; a.ID != "main" || a.TenantID != sim.TenantID() || a.ClientID != graphsim.DefaultDaemonApp ||
		a.Auth != config.AuthSecret || a.ClientSecret.Reveal() != graphsim.DefaultDaemonSecret {
		t.Errorf("account %+v, want main signing in as the daemon app with its secret", a)
	}
	defaults, err := config.Load(writeINI(t, "[Account.a]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\nAuth = secret\nClientSecret = z\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Polling != defaults.Polling {
		t.Errorf("[Polling] %+v, want the defaults %+v", cfg.Polling, defaults.Polling)
	}

	list, problems, err := users.Load(cfg.UsersFile)
	if err != nil || len(problems) != 0 || len(list) != 3 {
		t.Fatalf("users file: %d users, problems %v, err %v; want the tenant's 3", len(list), problems, err)
	}
	for i, u := range sim.Users() {
		got, ext := list[i], fmt.Sprint(1000+i)
		if got.UPN != u.UPN || got.SIPURI != "sip:"+ext+"@pbx.example" || got.Extension != ext {
			t.Errorf("user %d: %+v, want %s, sip:%s@pbx.example, extension %s", i, got, u.UPN, ext, ext)
		}
	}

	pem, err := os.ReadFile(cfg.Proxy.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(sim.Authority() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatalf("the tenant over TLS with [Proxy] CAFile %s: %v", cfg.Proxy.CAFile, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("openid-configuration: %s", resp.Status)
	}
}

// The options the tests vary reach the INI: the folder, [Polling], the
// account's secret, other accounts and sections after them.
func TestWriteSimConfigOptions(t *testing.T) {
	sim := StartSim(t, graphsim.Options{Users: 2})
	dir := t.TempDir()
	path := WriteSimConfig(t, sim, SimConfig{Dir: dir, Interval: 1500 * time.Millisecond, ResolveRate: 2.5, ClientSecret: "other-secret",
		Extra: "[HTTP]\nURL = http://127.0.0.1:1/presence\n"})
	if path != filepath.Join(dir, "Presence.ini") {
		t.Errorf("path %s, want Presence.ini in %s", path, dir)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Polling.Interval != 1500*time.Millisecond || cfg.Polling.ResolveRate != 2.5 {
		t.Errorf("[Polling] %+v, want Interval 1.5s and ResolveRate 2.5", cfg.Polling)
	}
	if len(cfg.Accounts) != 1 || cfg.Accounts[0].ClientSecret.Reveal() != "other-secret" {
		t.Errorf("accounts %+v, want main with the given secret", cfg.Accounts)
	}
	if cfg.HTTP.URL != "http://127.0.0.1:1/presence" {
		t.Errorf("[HTTP] URL %q, want the Extra section's", cfg.HTTP.URL)
	}

	path = WriteSimConfig(t, sim, SimConfig{Accounts: "[Account.people]\nTenantID = " + sim.TenantID() +
		"\nClientID = presencebridge-demo\nAuth = devicecode\nUsername = svc@contoso.example\n"})
	if cfg, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Accounts) != 1 || cfg.Accounts[0].ID != "people" || cfg.Accounts[0].Auth != config.AuthDeviceCode {
		t.Errorf("accounts %+v, want only people (device code)", cfg.Accounts)
	}
}

func writeINI(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Presence.ini")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
