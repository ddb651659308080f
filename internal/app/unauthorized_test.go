package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/teams/auth"
)

// Graph refuses access tokens that have not expired (continuous access
// evaluation, a password reset, revoked sessions). presencebridge drops the
// cached token and gets a new one at once, passing a claims challenge to MSAL;
// when the sign-in itself is dead, the device-code account shows needs-login
// with the fix within a poll or two instead of failing every poll for an hour
// while status says ok.
func TestGraphRefusesTheAccessToken(t *testing.T) {
	sim, path := twoAccountTenant(t, func(o *graphsim.Options) { o.AccessTokenLifetime = time.Hour })
	r := start(t, path)
	if _, err := r.app.Login(context.Background(), "people", func(string) {}); err != nil {
		t.Fatalf("login: %v", err)
	}
	waitFor(t, "20 first sightings", func() bool { return len(r.sink.byUPN()) == 20 }, r)
	people, daemon := firstUser(t, sim, "contoso.example"), firstUser(t, sim, "fabrikam.example")

	// Continuous access evaluation: the access tokens are refused with a claims
	// challenge, the refresh token still works.
	sim.RevokeSessions(graphsim.RevokeOptions{KeepRefreshTokens: true, ClaimsChallenge: true})
	setOther(t, sim, people)
	setOther(t, sim, daemon)
	waitFor(t, "both changes after the revocation", func() bool {
		return len(r.sink.byUPN()[people]) == 2 && len(r.sink.byUPN()[daemon]) == 2
	}, r)
	if n := sim.ClaimsRequests(); n < 2 {
		t.Errorf("%d token requests carried the claims challenge, want one per account", n)
	}
	for _, id := range []string{"people", "daemon"} {
		if st := r.account(t, id).Sign; st.State != auth.StateOK {
			t.Errorf("%s's sign-in after a renewed token = %+v", id, st)
		}
	}

	// A password reset: access and refresh tokens are revoked. The device-code
	// account needs a new sign-in and says so; the app registration gets a new
	// token with its secret and polls on.
	sim.RevokeSessions(graphsim.RevokeOptions{})
	waitFor(t, "needs-login", func() bool { return r.account(t, "people").Sign.State == auth.StateNeedsLogin }, r)
	st := r.account(t, "people")
	if st.Sign.Fix != "presencebridge login --account people" || !strings.Contains(st.Sign.LastError, "AADSTS70008") {
		t.Errorf("status does not carry the cause and the fix: %+v", st.Sign)
	}
	ok, why := health(r.app.report(), time.Now().Add(time.Hour), time.Now().Add(-time.Hour))
	if ok || !strings.Contains(why, "fix: presencebridge login --account people") {
		t.Errorf("healthz: ok=%v %q, want the sign-in and its fix as the cause", ok, why)
	}
	// presence get shows what is kept and the sign-in problem instead of failing.
	rep, err := r.app.Presence(context.Background(), people)
	if err != nil || rep.LastKnown == nil || rep.Live != nil || !strings.Contains(rep.LiveError, "sign-in needed") ||
		rep.Fix != "presencebridge login --account people" {
		t.Errorf("presence get with a dead sign-in = %+v, %v; want the kept state, the problem and its fix", rep, err)
	}
	before := len(r.sink.byUPN()[daemon])
	setOther(t, sim, daemon)
	waitFor(t, "the daemon account's change", func() bool { return len(r.sink.byUPN()[daemon]) == before+1 }, r)
	if st := r.account(t, "daemon").Sign; st.State != auth.StateOK {
		t.Errorf("daemon's sign-in = %+v", st)
	}
	time.Sleep(2 * time.Second) // a few more polls of the dead account
	r.stop()
	logs := r.logs.String()
	if n := strings.Count(logs, `Sign-in needed: presence of this account is not read until someone signs in again" account=people reason="invalid_grant: AADSTS70008`); n != 1 {
		t.Errorf("the dead sign-in was logged %d times, want once:\n%s", n, logs)
	}
	if strings.Contains(logs, "Polling failed") && strings.Contains(logs, "InvalidAuthenticationToken") {
		t.Errorf("a refused token was reported as a polling failure instead of a sign-in problem:\n%s", logs)
	}
}
