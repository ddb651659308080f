package testkit

import (
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
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
// the running simulated tenant sim, with simconfig.Write (the writer behind
// `presencebridge simulate --write-config`), and returns the path of Presence.ini:
// the tenant's CA as sim-ca.pem, users.csv listing every simulated user (see
// WriteSimUsers) and a Presence.ini that starts
//
//	[General]
//	ControlAddr = off
//	MetricsAddr = off
//
//	[Microsoft]
//	LoginURL = <sim.URL()>
//	GraphURL = <sim.GraphURL()>
//
//	[Proxy]
//	URL = direct
//	CAFile = sim-ca.pem
//
// (no endpoints, so tests can run side by side) and goes on with [Polling] and
// the sections of c.
func WriteSimConfig(t testing.TB, sim *graphsim.Server, c SimConfig) string {
	t.Helper()
	if c.Dir == "" {
		c.Dir = t.TempDir()
	}
	path, err := simconfig.Write(sim, simconfig.Options{
		Dir:          c.Dir,
		ControlAddr:  "off",
		MetricsAddr:  "off",
		Interval:     c.Interval,
		ResolveRate:  c.ResolveRate,
		Accounts:     c.Accounts,
		ClientSecret: c.ClientSecret,
		Extra:        c.Extra,
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteSimUsers writes dir/users.csv listing us as simconfig.WriteUsers does: UPN,
// SIP URI sip:<1000+i>@pbx.example, extension 1000+i and name of the i-th user.
func WriteSimUsers(t testing.TB, dir string, us []graphsim.User) {
	t.Helper()
	if err := simconfig.WriteUsers(dir, us); err != nil {
		t.Fatal(err)
	}
}
