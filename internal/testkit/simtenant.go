package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// StartSim starts a simulated tenant (graphsim) on loopback for one test and
// closes it when the test ends; it ends t if the tenant cannot start.
func StartSim(t testing.TB, o graphsim.Options) *graphsim.Server {
	t.Helper()
	sim, err := graphsim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// SimConfig is what the tests vary in the configuration WriteSimConfig writes.
type SimConfig struct {
	// Dir is the folder for Presence.ini, users.csv and sim-ca.pem; default a
	// new t.TempDir().
	Dir string
	// Interval and ResolveRate, when set, go into [Polling]; otherwise the
	// product's defaults apply.
	Interval    time.Duration
	ResolveRate float64
	// Accounts are the [Account.*] sections. Default: one account "main" that
	// signs in as the tenant's daemon app with ClientSecret.
	Accounts string
	// ClientSecret is the default account's ClientSecret as Presence.ini holds
	// it (e.g. encrypted with secret.Encrypt); default the daemon app's secret
	// (graphsim.DefaultDaemonSecret) in clear.
	ClientSecret string
	// Extra follows the accounts: targets ([SIP], [HTTP]), [Delivery], [Mapping].
	Extra string
}

// WriteSimConfig writes what an engineer would write to point presencebridge at
// the running simulated tenant sim, and returns the path of Presence.ini: the
// tenant's CA as sim-ca.pem, users.csv listing every simulated user (see
// WriteSimUsers) and a Presence.ini that starts
//
//	[General]
//	ControlAddr = off
//	MetricsAddr = off
//	[Microsoft]
//	LoginURL = <sim.URL()>
//	GraphURL = <sim.GraphURL()>
//	[Proxy]
//	URL = direct
//	CAFile = sim-ca.pem
//
// (no endpoints, so tests can run side by side) and goes on with [Polling] and
// the sections of c. `presencebridge simulate --write-config` is the product's
// own, for people.
func WriteSimConfig(t testing.TB, sim *graphsim.Server, c SimConfig) string {
	t.Helper()
	if c.Dir == "" {
		c.Dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "sim-ca.pem"), sim.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	WriteSimUsers(t, c.Dir, sim.Users())
	var ini strings.Builder
	fmt.Fprintf(&ini, "[General]\nControlAddr = off\nMetricsAddr = off\n[Microsoft]\nLoginURL = %s\nGraphURL = %s\n[Proxy]\nURL = direct\nCAFile = sim-ca.pem\n",
		sim.URL(), sim.GraphURL())
	if c.Interval != 0 || c.ResolveRate != 0 {
		ini.WriteString("[Polling]\n")
		if c.Interval != 0 {
			fmt.Fprintf(&ini, "Interval = %s\n", c.Interval)
		}
		if c.ResolveRate != 0 {
			fmt.Fprintf(&ini, "ResolveRate = %g\n", c.ResolveRate)
		}
	}
	if c.Accounts == "" {
		if c.ClientSecret == "" {
			c.ClientSecret = graphsim.DefaultDaemonSecret
		}
		c.Accounts = fmt.Sprintf("[Account.main]\nTenantID = %s\nClientID = %s\nAuth = secret\nClientSecret = %s\n",
			sim.TenantID(), graphsim.DefaultDaemonApp, c.ClientSecret)
	}
	ini.WriteString(c.Accounts + c.Extra)
	path := filepath.Join(c.Dir, "Presence.ini")
	if err := os.WriteFile(path, []byte(ini.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteSimUsers writes dir/users.csv listing us: UPN, SIP URI
// sip:<1000+i>@pbx.example and extension 1000+i for the i-th user.
func WriteSimUsers(t testing.TB, dir string, us []graphsim.User) {
	t.Helper()
	var csv strings.Builder
	csv.WriteString("UPN,SIP URI,Extension\n")
	for i, u := range us {
		fmt.Fprintf(&csv, "%s,sip:%d@pbx.example,%d\n", u.UPN, 1000+i, 1000+i)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.csv"), []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
