package verify

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// [Asterisk] against the real Asterisk: ARI and AMI pass with what Asterisk
// said and the first user's device and hint; a wrong ARI password and a
// refused AMI login fail, each with its fix and without the password.
func TestIntegrationAsteriskTarget(t *testing.T) {
	pbx := pbxtest.Asterisk(t, asterisk.Options{})
	ari := func(password string) string {
		return fmt.Sprintf("[Asterisk]\nURL = %s\nUsername = %s\nPassword = %s\n", pbx.ARIURL, pbx.ARIUser, password)
	}
	ami := func(secret string) string {
		return fmt.Sprintf("[Asterisk]\nMode = ami\nAddress = %s\nUsername = %s\nSecret = %s\n", pbx.AMIAddr, pbx.AMIUser, secret)
	}
	tn := newTenant(t, nil)

	r := find(t, tn.verify(t, tn.ini(ari(pbx.ARIPassword))), "Asterisk target")
	for _, want := range []string{"Asterisk " + asterisk.Version, "Stasis:presencebridge-verify set and deleted", "is Stasis:teams-1000, now UNKNOWN",
		"its hint: exten => 1000,hint,PJSIP/1000&Stasis:teams-1000"} {
		if r.Status != Pass || !strings.Contains(r.Detail, want) {
			t.Errorf("ARI: %s %q, want PASS with %q", r.Status, r.Detail, want)
		}
	}
	r = find(t, tn.verify(t, tn.ini(ami(pbx.AMIPassword))), "Asterisk target")
	for _, want := range []string{"Asterisk Call Manager/", "logged in as " + pbx.AMIUser + ", who may run Setvar", "is Custom:teams-1000, now UNKNOWN",
		"exten => 1000,hint,PJSIP/1000&Custom:teams-1000"} {
		if r.Status != Pass || !strings.Contains(r.Detail, want) {
			t.Errorf("AMI: %s %q, want PASS with %q", r.Status, r.Detail, want)
		}
	}

	rs := tn.verify(t, tn.ini(ari("wrong-ari-password")))
	expectFail(t, rs, "Asterisk target", []string{"401 Unauthorized", `ARI refused user "` + pbx.ARIUser + `"`}, []string{"[Asterisk] Username and Password", "ari.conf"})
	rs = append(rs, tn.verify(t, tn.ini(ami("wrong-ami-secret")))...)
	expectFail(t, rs[len(rs)/2:], "Asterisk target", []string{"Login", "refused the login", "Authentication failed"},
		[]string{"[Asterisk] Username and Secret", "manager.conf", "permit"})
	for _, r := range rs {
		if strings.Contains(r.Detail+r.Fix, "wrong-a") {
			t.Errorf("%s shows the password: %+v", r.Check, r)
		}
	}
}

// ARI answers the probe device's PUT with 409 "Uncontrolled device specified"
// (what the real one says to a name without Stasis:; a proxy in front of it
// that rewrites the path does that): the fix says how devices are named.
func TestAsteriskUncontrolledDevice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/asterisk/info") {
			w.Write([]byte(`{"system":{"version":"22.10.1"}}`))
			return
		}
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"message":"Uncontrolled device specified"}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	tn := newTenant(t, nil)
	rs := tn.verify(t, tn.ini("[Asterisk]\nURL = http://"+ln.Addr().String()+"/ari\nUsername = pb\nPassword = pw\n"))
	expectFail(t, rs, "Asterisk target", []string{"409 Conflict (Uncontrolled device specified)", "Stasis:presencebridge-verify"},
		[]string{"named Stasis:<name>", "the hints must name the same Stasis: device"})
}

// Nothing answers at [Asterisk] URL: the fix names http.conf.
func TestAsteriskUnreachable(t *testing.T) {
	tn := newTenant(t, nil)
	rs := tn.verify(t, tn.ini("[Asterisk]\nURL = http://"+closedPort(t)+"/ari\nUsername = pb\nPassword = pw\nTimeout = 1s\n"))
	expectFail(t, rs, "Asterisk target", []string{"GET http://127.0.0.1:", "/ari/asterisk/info", "connection refused"},
		[]string{"[Asterisk] URL", "http.conf has enabled = yes"})
}

// Users the Device template names no device for are reported offline, with
// the fix.
func TestAsteriskDevicesOffline(t *testing.T) {
	tn := newTenant(t, nil)
	users := "UPN,SIP URI,Extension\n"
	for i, u := range tn.sim.Users() {
		ext := fmt.Sprint(1000 + i)
		if i%2 == 1 {
			ext = ""
		}
		users += fmt.Sprintf("%s,sip:%d@pbx.example,%s\n", u.UPN, 1000+i, ext)
	}
	if err := os.WriteFile(filepath.Join(tn.dir, "users.csv"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tn.dir, "Presence.ini")
	if err := os.WriteFile(path, []byte(tn.ini("[Asterisk]\nURL = http://127.0.0.1:1/ari\nUsername = pb\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := find(t, Run(context.Background(), Options{ConfigPath: path, Offline: true}), "Asterisk devices")
	if r.Status != Warn || !strings.Contains(r.Detail, "4 of 8 users get no device from [Asterisk] Device = teams-{extension}") ||
		!strings.Contains(r.Detail, "and 1 more") || !strings.Contains(r.Fix, "teams-{user}") {
		t.Errorf("%+v", r)
	}
}
