package verify

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
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

// A PBX that does not answer: the SUBSCRIBE fails with where it went and the fix.
func TestPBXWatchUnreachable(t *testing.T) {
	tn := newTenant(t, nil)
	addr := closedPort(t)
	rs := tn.verify(t, tn.ini(watching("dialog", addr, "Transport = tcp\nTimeout = 1s\n")))
	expectFail(t, rs, "PBX watch", []string{"SUBSCRIBE sip:1000@pbx.example (Event: dialog) over tcp to " + addr + " ([SIP] Server)"},
		[]string{"[SIP] Server (" + addr + ")", "[SIP] Transport (tcp)", "firewall"})
}

// The real Kamailio serves Event: presence (its presence module takes a fetch
// as RFC 6665 says): PASS, with what it says of the user.
func TestIntegrationPBXWatchKamailio(t *testing.T) {
	kam := pbxtest.Kamailio(t, kamailio.Options{})
	tn := newTenant(t, nil)
	rs := tn.verify(t, tn.ini(watching("presence", kam.UDP, "")))
	r := find(t, rs, "PBX watch")
	if r.Status != Pass || !strings.HasPrefix(r.Detail, "SUBSCRIBE sip:1000@pbx.example (Event: presence) accepted; the PBX says: ") ||
		strings.Contains(r.Detail, "fetch") {
		t.Errorf("Kamailio: %+v\n%s", r, kam.LogTail(20))
	}
	// The test PUBLISH of the SIP target: accepted and withdrawn.
	if r := find(t, rs, "SIP target: PUBLISH (Event: presence)"); r.Status != Pass || !strings.Contains(r.Detail, "accepted a publication of sip:1000@pbx.example") {
		t.Errorf("test PUBLISH to Kamailio: %+v", r)
	}
	// [PBX] Listen held by another socket (the running service): the probe
	// listens on a free port beside it and says so.
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	rs = tn.verify(t, tn.ini(watching("presence", kam.UDP, "")+"Listen = "+held.LocalAddr().String()+"\n"))
	if r := find(t, rs, "PBX watch"); r.Status != Pass || !strings.Contains(r.Detail, "[PBX] Listen "+held.LocalAddr().String()+" is in use") {
		t.Errorf("Listen in use: %+v", r)
	}
}

// The real Asterisk, with its hints and digest credentials: PASS with the right
// password (Asterisk takes no fetch, so a short subscription is made), FAIL with
// a wrong one, FAIL 404 for an extension without a hint.
func TestIntegrationPBXWatchAsterisk(t *testing.T) {
	ast := pbxtest.Asterisk(t, asterisk.Options{})
	tn := newTenant(t, nil)
	sipKeys := func(password string) string {
		enc, err := secret.Encrypt(password, tn.dir)
		if err != nil {
			t.Fatal(err)
		}
		return "Username = " + ast.Subscriber + "\nPassword = " + enc + "\nFrom = sip:" + ast.Subscriber + "@" + ast.Domain + "\n"
	}
	good := tn.ini(watching("dialog", ast.SIPAddr, sipKeys(ast.SubscriberPassword)))

	rs := tn.verify(t, good)
	r := find(t, rs, "PBX watch")
	if r.Status != Pass || !strings.HasPrefix(r.Detail, "SUBSCRIBE "+ast.URI("1000")+" (Event: dialog) accepted; the PBX says: idle (it takes no fetch") {
		t.Errorf("right password: %+v\n%s", r, ast.LogTail(20))
	}
	// Asterisk takes no PIDF PUBLISH: the test PUBLISH says so, with the way out.
	expectFail(t, rs, "SIP target: PUBLISH (Event: presence)", []string{"489"}, nil)
	if r := find(t, rs, "SIP target: PUBLISH (Event: presence)"); !strings.Contains(r.Detail, "[Asterisk]") || !strings.Contains(r.Detail, "Event = dialog") {
		t.Errorf("the 489 does not point at [Asterisk] and Event = dialog: %+v", r)
	}
	if strings.Contains(r.Detail+r.Fix, ast.SubscriberPassword) {
		t.Errorf("the password shows: %+v", r)
	}

	rs = tn.verify(t, tn.ini(watching("dialog", ast.SIPAddr, sipKeys("not-the-password"))))
	expectFail(t, rs, "PBX watch", []string{"401", `after sending credentials for user "` + ast.Subscriber + `"`},
		[]string{`[SIP] Username ("` + ast.Subscriber + `") and Password`})
	if r := find(t, rs, "PBX watch"); strings.Contains(r.Detail+r.Fix, "not-the-password") {
		t.Errorf("the password shows: %+v", r)
	}

	users := filepath.Join(tn.dir, "users.csv")
	raw, err := os.ReadFile(users)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(users, []byte(strings.Replace(string(raw), "sip:1000@", "sip:1099@", 1)), 0o644)
	rs = tn.verify(t, good)
	expectFail(t, rs, "PBX watch", []string{"SUBSCRIBE " + ast.URI("1099") + " (Event: dialog): 404"},
		[]string{"SIP URI of " + tn.sim.Users()[0].UPN, "exten => 1099,hint,PJSIP/1099"})
}
