package verify

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// closedPort is a loopback TCP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// watching is [PBX] Watch = watch against the PBX at server, with extra [SIP] keys.
func watching(watch, server, sipKeys string) string {
	return "[SIP]\nServer = " + server + "\n" + sipKeys + "[PBX]\nWatch = " + watch + "\n"
}

// all returns every result of the checks whose name contains name.
func all(rs []Result, name string) []Result {
	var out []Result
	for _, r := range rs {
		if strings.Contains(r.Check, name) {
			out = append(out, r)
		}
	}
	return out
}

// With [PBX] Watch on, an app-token account's token must carry the application
// permission Presence.ReadWrite.All (graphsim's daemon app has it by default);
// with Watch off the check is not made.
func TestWritePermission(t *testing.T) {
	tn := newTenant(t, nil)
	pbx := watching("dialog", closedPort(t), "Transport = tcp\nTimeout = 1s\n")
	r := find(t, tn.verify(t, tn.ini(pbx)), "main: write permission")
	if r.Status != Pass || !strings.Contains(r.Detail, "Presence.ReadWrite.All") {
		t.Errorf("with the permission: %+v", r)
	}
	if got := all(tn.verify(t, tn.ini("")), "write permission"); len(got) != 0 {
		t.Errorf("Watch off checked the write permission: %+v", got)
	}

	tn = newTenant(t, nil)
	if err := tn.sim.SetAppRole(graphsim.DefaultDaemonApp, graphsim.RolePresenceWrite, false); err != nil {
		t.Fatal(err)
	}
	rs := tn.verify(t, tn.ini(pbx))
	expectFail(t, rs, "main: write permission", []string{"[PBX] Watch = dialog", "lacks it"},
		[]string{"App registrations > presencebridge-daemon", "Application permission Presence.ReadWrite.All", "grant admin consent", "calls on the PBX do not show in Teams"})
	if r := find(t, rs, "main: permissions"); r.Status != Pass {
		t.Errorf("reading still needs only Presence.Read.All: %+v", r)
	}
	// Nothing written to Teams ([PBX] InCall = off and the rest off by default):
	// no write permission needed.
	if got := all(tn.verify(t, tn.ini(pbx+"InCall = off\n")), "write permission"); len(got) != 0 {
		t.Errorf("with nothing written to Teams: %+v", got)
	}
}

// A device-code account can read but not write other users' presence: a WARN
// with the fix, whether or not it has signed in.
func TestWritePermissionDeviceCode(t *testing.T) {
	sim := testkit.StartSim(t, graphsim.Options{Users: 4})
	dir := t.TempDir()
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Dir: dir, Accounts: "[Account.people]\nTenantID = " + sim.TenantID() +
		"\nClientID = " + graphsim.DefaultPublicApp + "\nAuth = devicecode\nUsername = presence.svc@contoso.example\n",
		Extra: watching("dialog", closedPort(t), "Transport = tcp\nTimeout = 1s\n")})
	rs := Run(context.Background(), Options{ConfigPath: path})
	r := find(t, rs, "people: write permission")
	if r.Status != Warn || !strings.Contains(r.Detail, "can read other users' presence but not write it") ||
		!strings.Contains(r.Detail, "for its 4 users") || !strings.Contains(r.Fix, "client secret or certificate") ||
		!strings.Contains(r.Fix, "Presence.ReadWrite.All") {
		t.Errorf("device code: %+v", r)
	}
}
