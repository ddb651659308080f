package graphsim_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

const (
	setPath   = "setPresence"
	clearPath = "clearPresence"
)

// write POSTs setPresence or clearPresence for user (id or UPN).
func write(t testing.TB, s *graphsim.Server, op, tok, user string, body any) reply {
	t.Helper()
	return do(t, s, http.MethodPost, "/v1.0/users/"+user+"/presence/"+op, tok, body)
}

// setBody is a setPresence body; an empty expiration leaves the field out.
func setBody(session, availability, activity, expiration string) map[string]string {
	b := map[string]string{"sessionId": session, "availability": availability, "activity": activity}
	if expiration != "" {
		b["expirationDuration"] = expiration
	}
	return b
}

func clearBody(session string) map[string]string { return map[string]string{"sessionId": session} }

// shown is what getPresencesByUserId answers for one user, over HTTP.
func shown(t testing.TB, s *graphsim.Server, tok, id string) string {
	t.Helper()
	r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(id))
	var p presenceReply
	r.json(t, &p)
	if r.Status != http.StatusOK || len(p.Value) != 1 {
		t.Fatalf("getPresencesByUserId: %d %s", r.Status, r.Body)
	}
	return p.Value[0].Availability + "/" + p.Value[0].Activity
}

// shownOne is what GET /users/{id}/presence answers.
func shownOne(t testing.TB, s *graphsim.Server, tok, id string) string {
	t.Helper()
	r := do(t, s, http.MethodGet, "/v1.0/users/"+id+"/presence", tok, nil)
	var p struct{ Availability, Activity string }
	r.json(t, &p)
	if r.Status != http.StatusOK {
		t.Fatalf("GET presence: %d %s", r.Status, r.Body)
	}
	return p.Availability + "/" + p.Activity
}

func mustSet(t testing.TB, s *graphsim.Server, upn, availability, activity string) {
	t.Helper()
	if _, err := s.SetPresence(upn, availability, activity); err != nil {
		t.Fatal(err)
	}
}

// The user's own (client) state and an application's session compete by
// DoNotDisturb > Busy > Available > Away; a session wins a tie; Offline or an
// unknown state shows the session; clearing shows the client state again.
func TestPresenceSessionAggregation(t *testing.T) {
	tests := []struct {
		client, session [2]string
		want            string
	}{
		{[2]string{"Available", "Available"}, [2]string{"Busy", "InACall"}, "Busy/InACall"},
		{[2]string{"AvailableIdle", "Available"}, [2]string{"Busy", "InAConferenceCall"}, "Busy/InAConferenceCall"},
		{[2]string{"Away", "Away"}, [2]string{"Busy", "InACall"}, "Busy/InACall"},
		{[2]string{"BeRightBack", "BeRightBack"}, [2]string{"Available", "Available"}, "Available/Available"},
		{[2]string{"Offline", "OffWork"}, [2]string{"Busy", "InACall"}, "Busy/InACall"},
		{[2]string{"PresenceUnknown", "PresenceUnknown"}, [2]string{"Away", "Away"}, "Away/Away"},
		{[2]string{"Focusing", "DeepWork"}, [2]string{"Away", "Away"}, "Away/Away"},     // a value the simulator does not know
		{[2]string{"Busy", "InAMeeting"}, [2]string{"Busy", "InACall"}, "Busy/InACall"}, // equal rank: the session
		{[2]string{"BusyIdle", "Busy"}, [2]string{"Available", "Available"}, "BusyIdle/Busy"},
		{[2]string{"DoNotDisturb", "DoNotDisturb"}, [2]string{"Busy", "InACall"}, "DoNotDisturb/DoNotDisturb"},
		{[2]string{"Busy", "InAMeeting"}, [2]string{"Away", "Away"}, "Busy/InAMeeting"},
		{[2]string{"Available", "Available"}, [2]string{"Away", "Away"}, "Available/Available"},
		{[2]string{"Available", "Available"}, [2]string{"DoNotDisturb", "Presenting"}, "DoNotDisturb/Presenting"},
	}
	s, fc := startFake(t, graphsim.Options{Users: len(tests)})
	tok := appToken(t, s)
	for i, tt := range tests {
		u := s.Users()[i]
		mustSet(t, s, u.UPN, tt.client[0], tt.client[1])
		client := tt.client[0] + "/" + tt.client[1]
		fc.Advance(time.Second)
		if r := write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, tt.session[0], tt.session[1], "")); r.Status != http.StatusOK || len(r.Body) != 0 {
			t.Fatalf("client %s, session %v: setPresence %d %s, want 200 without a body", client, tt.session, r.Status, r.Body)
		}
		if got := shown(t, s, tok, u.ID); got != tt.want {
			t.Errorf("client %s with session %v: getPresencesByUserId shows %s, want %s", client, tt.session, got, tt.want)
		}
		if got := shownOne(t, s, tok, u.ID); got != tt.want {
			t.Errorf("client %s with session %v: GET presence shows %s, want %s", client, tt.session, got, tt.want)
		}
		if av, ac, _ := s.Presence(u.UPN); av+"/"+ac != tt.want {
			t.Errorf("client %s with session %v: Presence %s/%s, want %s", client, tt.session, av, ac, tt.want)
		}
		fc.Advance(time.Second)
		if r := write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp)); r.Status != http.StatusOK {
			t.Fatalf("clearPresence: %d %s", r.Status, r.Body)
		}
		if got := shown(t, s, tok, u.ID); got != client {
			t.Errorf("client %s: after clearPresence Graph shows %s, want the client state back", client, got)
		}
	}
}

// A change Graph shows because of a session is a change like any other: the
// change record (what polling and the demo's latencies follow) and Stats see it,
// stamped with the tenant's clock.
func TestPresenceSessionChangesAreRecorded(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2})
	tok := appToken(t, s)
	u := s.Users()[0]
	mustSet(t, s, u.UPN, "Available", "Available")
	s.ResetStats()
	fc.Advance(time.Minute)
	set := fc.Now()
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", ""))

	// While the session shows, the user's own changes are kept but hidden by it,
	// unless they outrank it.
	fc.Advance(time.Minute)
	if at, _ := s.SetPresence(u.UPN, "Away", "Away"); !at.Equal(set) {
		t.Errorf("SetPresence under a Busy session returned %v, want the last visible change %v", at, set)
	}
	fc.Advance(time.Minute)
	dnd := fc.Now()
	if at, _ := s.SetPresence(u.UPN, "DoNotDisturb", "DoNotDisturb"); !at.Equal(dnd) {
		t.Errorf("SetPresence to DoNotDisturb returned %v, want %v (it outranks the session)", at, dnd)
	}
	fc.Advance(time.Minute)
	mustSet(t, s, u.UPN, "Available", "Available")
	fc.Advance(time.Minute)
	cleared := fc.Now()
	write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp))

	var got []string
	for _, c := range s.Changes(set.Add(-time.Nanosecond)) {
		got = append(got, fmt.Sprintf("%s %s/%s", c.At.Sub(t0), c.Availability, c.Activity))
	}
	want := []string{
		fmt.Sprintf("%s Busy/InACall", set.Sub(t0)),
		fmt.Sprintf("%s DoNotDisturb/DoNotDisturb", dnd.Sub(t0)),
		fmt.Sprintf("%s Busy/InACall", dnd.Add(time.Minute).Sub(t0)), // back to Available below the session
		fmt.Sprintf("%s Available/Available", cleared.Sub(t0)),
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("changes:\n got %v\nwant %v", got, want)
	}
	if st := s.Stats(); st.Changes != 4 {
		t.Errorf("Stats.Changes = %d, want 4", st.Changes)
	}
}

// Among sessions of several applications the same precedence decides, and a
// clear ends only the caller's session.
func TestPresenceSessionsOfSeveralApps(t *testing.T) {
	apps := []graphsim.App{{ClientID: "app-a", Secret: "s"}, {ClientID: "app-b", Secret: "s"}}
	s, fc := startFake(t, graphsim.Options{Users: 1, Apps: apps})
	ta, _ := s.AppToken("app-a")
	tb, _ := s.AppToken("app-b")
	u := s.Users()[0]
	mustSet(t, s, u.UPN, "Away", "Away")
	write(t, s, setPath, ta, u.ID, setBody("app-a", "Available", "Available", ""))
	fc.Advance(time.Second)
	write(t, s, setPath, tb, u.ID, setBody("app-b", "Busy", "InAConferenceCall", ""))
	if got := shown(t, s, ta, u.ID); got != "Busy/InAConferenceCall" {
		t.Errorf("Available and Busy sessions show %s, want Busy/InAConferenceCall", got)
	}
	sessions, ok := s.Sessions(u.UPN)
	if !ok || len(sessions) != 2 || sessions[0].SessionID != "app-a" || sessions[1].SessionID != "app-b" ||
		sessions[1].Activity != "InAConferenceCall" || !sessions[1].Expires.Equal(t0.Add(time.Second+5*time.Minute)) {
		t.Errorf("Sessions = %+v", sessions)
	}
	write(t, s, clearPath, tb, u.ID, clearBody("app-b"))
	if got := shown(t, s, ta, u.ID); got != "Available/Available" {
		t.Errorf("after app-b cleared: %s, want app-a's Available/Available over the client's Away", got)
	}
	if r := write(t, s, clearPath, tb, u.ID, clearBody("app-b")); r.Status != http.StatusNotFound || r.graphErrorCode(t) != "NotFound" {
		t.Errorf("app-b clears again: %d %s, want 404 NotFound", r.Status, r.Body)
	}
	write(t, s, clearPath, ta, u.ID, clearBody("app-a"))
	if got := shown(t, s, ta, u.ID); got != "Away/Away" {
		t.Errorf("no sessions left: %s, want the client's Away/Away", got)
	}
}

// expirationDuration: ISO 8601, PT5M..PT4H, PT5M when absent; a session ends at
// its expiry on the tenant's clock and a renewal moves the expiry.
func TestPresenceSessionExpiry(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2})
	tok := appToken(t, s)
	u := s.Users()[0]
	mustSet(t, s, u.UPN, "Available", "Available")

	for _, tt := range []struct {
		expiration string
		want       time.Duration
	}{
		{"", 5 * time.Minute},
		{"PT5M", 5 * time.Minute},
		{"PT300S", 5 * time.Minute},
		{"PT1H30M", 90 * time.Minute},
		{"PT4H", 4 * time.Hour},
		{"PT0H10M0.5S", 10*time.Minute + 500*time.Millisecond},
	} {
		r := write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", tt.expiration))
		ss, _ := s.Sessions(u.ID)
		if r.Status != http.StatusOK || len(ss) != 1 || !ss[0].Expires.Equal(fc.Now().Add(tt.want)) {
			t.Errorf("expirationDuration %q: %d %s, sessions %+v; want one expiring after %s", tt.expiration, r.Status, r.Body, ss, tt.want)
		}
	}

	// A PT10M session, renewed at +8m for another PT10M, ends at +18m.
	start := fc.Now()
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", "PT10M"))
	fc.Advance(8 * time.Minute)
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", "PT10M"))
	fc.Advance(10*time.Minute - time.Nanosecond)
	if got := shown(t, s, tok, u.ID); got != "Busy/InACall" {
		t.Fatalf("just before the renewed expiry: %s, want Busy/InACall", got)
	}
	// Nobody looks for a while: the end is still recorded at the expiry time.
	fc.Advance(7 * time.Minute)
	if got := shownOne(t, s, tok, u.ID); got != "Available/Available" {
		t.Errorf("after the expiry: %s, want the client's Available/Available", got)
	}
	ch := s.Changes(start)
	if len(ch) != 1 || ch[0].Availability != "Available" || !ch[0].At.Equal(start.Add(18*time.Minute)) {
		t.Errorf("changes after the renewal: %+v, want Available at +18m", ch)
	}
	if r := write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp)); r.Status != http.StatusNotFound {
		t.Errorf("clearing an expired session: %d %s, want 404", r.Status, r.Body)
	}
	if ss, _ := s.Sessions(u.UPN); len(ss) != 0 {
		t.Errorf("sessions after the expiry: %+v", ss)
	}
}

// Allowed pairs only, sessionId = the caller's application id, a bounded ISO
// 8601 expiration: 400 with Graph's error shape; an unknown user 404.
func TestPresenceWriteRequestChecks(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 2})
	tok := appToken(t, s)
	u := s.Users()[0]
	app := graphsim.DefaultDaemonApp
	tests := []struct {
		name   string
		op     string
		user   string
		body   any
		status int
		code   string
	}{
		{"busy in a meeting", setPath, u.ID, setBody(app, "Busy", "InAMeeting", ""), 400, "BadRequest"},
		{"out of office", setPath, u.ID, setBody(app, "Offline", "OutOfOffice", ""), 400, "BadRequest"},
		{"busy/busy", setPath, u.ID, setBody(app, "Busy", "Busy", ""), 400, "BadRequest"},
		{"DND/DND", setPath, u.ID, setBody(app, "DoNotDisturb", "DoNotDisturb", ""), 400, "BadRequest"},
		{"no activity", setPath, u.ID, map[string]string{"sessionId": app, "availability": "Busy"}, 400, "BadRequest"},
		{"no sessionId", setPath, u.ID, map[string]string{"availability": "Busy", "activity": "InACall"}, 400, "BadRequest"},
		{"another app's sessionId", setPath, u.ID, setBody(graphsim.DefaultPublicApp, "Busy", "InACall", ""), 400, "BadRequest"},
		{"clear with another app's sessionId", clearPath, u.ID, clearBody("someone-else"), 400, "BadRequest"},
		{"expiration too short", setPath, u.ID, setBody(app, "Busy", "InACall", "PT4M59S"), 400, "BadRequest"},
		{"expiration too long", setPath, u.ID, setBody(app, "Busy", "InACall", "PT4H1S"), 400, "BadRequest"},
		{"a day", setPath, u.ID, setBody(app, "Busy", "InACall", "P1D"), 400, "BadRequest"},
		{"a Go duration", setPath, u.ID, setBody(app, "Busy", "InACall", "5m"), 400, "BadRequest"},
		{"bare PT", setPath, u.ID, setBody(app, "Busy", "InACall", "PT"), 400, "BadRequest"},
		{"minutes before hours", setPath, u.ID, setBody(app, "Busy", "InACall", "PT5M1H"), 400, "BadRequest"},
		{"months", setPath, u.ID, setBody(app, "Busy", "InACall", "P1M"), 400, "BadRequest"},
		{"not JSON", setPath, u.ID, "{", 400, "BadRequest"},
		{"unknown user", setPath, "00000000-0000-0000-0000-000000000000", setBody(app, "Busy", "InACall", ""), 404, "Request_ResourceNotFound"},
		{"unknown user clear", clearPath, "nobody@contoso.example", clearBody(app), 404, "Request_ResourceNotFound"},
		{"no session to clear", clearPath, u.ID, clearBody(app), 404, "NotFound"},
		{"any case", setPath, u.UPN, setBody(app, "busy", "inACall", "PT1H"), 200, ""},
	}
	for _, tt := range tests {
		r := write(t, s, tt.op, tok, tt.user, tt.body)
		if r.Status != tt.status || (tt.code != "" && r.graphErrorCode(t) != tt.code) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, r.Status, r.Body, tt.status, tt.code)
		}
	}
	if got := shown(t, s, tok, u.ID); got != "Busy/InACall" {
		t.Errorf("after the checks Graph shows %s, want the one accepted write's Busy/InACall (canonical case)", got)
	}
	// A 400 names what is wrong.
	r := write(t, s, setPath, tok, u.ID, setBody(app, "Busy", "InAMeeting", ""))
	if !strings.Contains(string(r.Body), "Busy/InACall") || !strings.Contains(string(r.Body), "InAMeeting") {
		t.Errorf("bad pair message: %s, want the pair sent and the allowed ones", r.Body)
	}
}

// Writing needs an application token with Presence.ReadWrite.All; a delegated
// token may write only the signed-in user's own presence. SetAppRole and POST
// /_sim/approle grant and withdraw the application permission; tokens keep the
// roles they were issued with.
func TestPresenceWritePermissions(t *testing.T) {
	apps := []graphsim.App{
		{ClientID: graphsim.DefaultPublicApp, Public: true},
		{ClientID: graphsim.DefaultDaemonApp, Secret: graphsim.DefaultDaemonSecret},
		{ClientID: "reader", Secret: "s", Roles: []string{"Presence.Read.All", "User.ReadBasic.All"}},
	}
	s, _ := startFake(t, graphsim.Options{Users: 3, Apps: apps})
	us := s.Users()
	set := func(tok, session, user string) reply {
		return write(t, s, setPath, tok, user, setBody(session, "Busy", "InACall", ""))
	}
	forbidden := func(name string, r reply, want ...string) {
		t.Helper()
		if r.Status != http.StatusForbidden || r.graphErrorCode(t) != "Forbidden" {
			t.Errorf("%s: %d %s, want 403 Forbidden", name, r.Status, r.Body)
			return
		}
		for _, w := range want {
			if !strings.Contains(string(r.Body), w) {
				t.Errorf("%s: message %s does not say %q", name, r.Body, w)
			}
		}
	}

	reader, _ := s.AppToken("reader")
	forbidden("app without the permission", set(reader, "reader", us[0].ID), "Presence.ReadWrite.All", "reader")
	forbidden("app without the permission, clear", write(t, s, clearPath, reader, us[0].ID, clearBody("reader")), "Presence.ReadWrite.All")
	if r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", reader, presenceBody(us[0].ID)); r.Status != 200 {
		t.Errorf("the reader still reads: %d", r.Status)
	}

	// Granted at run time (client credentials over the token endpoint too).
	if err := s.SetAppRole("reader", graphsim.RolePresenceWrite, true); err != nil {
		t.Fatal(err)
	}
	forbidden("token issued before the grant", set(reader, "reader", us[0].ID))
	st, o := token(t, s, map[string][]string{"grant_type": {"client_credentials"}, "client_id": {"reader"},
		"client_secret": {"s"}, "scope": {"https://graph.microsoft.com/.default"}})
	if st != 200 {
		t.Fatalf("client credentials: %d %+v", st, o)
	}
	if r := set(o.AccessToken, "reader", us[0].ID); r.Status != http.StatusOK {
		t.Errorf("after the grant: %d %s", r.Status, r.Body)
	}

	// Withdrawn through the control API.
	daemon := appToken(t, s)
	if r := set(daemon, graphsim.DefaultDaemonApp, us[1].ID); r.Status != http.StatusOK {
		t.Fatalf("default daemon app: %d %s, want 200 (admin consent given by default)", r.Status, r.Body)
	}
	if r := do(t, s, http.MethodPost, "/_sim/approle", "", map[string]any{"app": graphsim.DefaultDaemonApp,
		"role": graphsim.RolePresenceWrite, "granted": false}); r.Status != http.StatusNoContent {
		t.Fatalf("/_sim/approle: %d %s", r.Status, r.Body)
	}
	if r := set(daemon, graphsim.DefaultDaemonApp, us[1].ID); r.Status != http.StatusOK {
		t.Errorf("a token issued before the withdrawal: %d, want 200 (it carries the role)", r.Status)
	}
	forbidden("new token after the withdrawal", set(appToken(t, s), graphsim.DefaultDaemonApp, us[1].ID), "Presence.ReadWrite.All")
	for _, bad := range []struct {
		body any
		want int
	}{
		{map[string]any{"app": "nobody", "role": graphsim.RolePresenceWrite, "granted": true}, 404},
		{map[string]any{"app": graphsim.DefaultDaemonApp, "role": graphsim.RolePresenceWrite}, 400},
		{map[string]any{"app": graphsim.DefaultDaemonApp, "role": "", "granted": true}, 400},
	} {
		if r := do(t, s, http.MethodPost, "/_sim/approle", "", bad.body); r.Status != bad.want {
			t.Errorf("/_sim/approle %v: %d %s, want %d", bad.body, r.Status, r.Body, bad.want)
		}
	}

	// Delegated: the signed-in user's own presence only, with the app's id as session.
	_, dc := deviceCode(t, s, graphsim.DefaultPublicApp)
	s.ApproveDeviceCodes(us[2].UPN)
	st, o = token(t, s, deviceForm(dc["device_code"].(string)))
	if st != 200 {
		t.Fatalf("device code: %d %+v", st, o)
	}
	if r := set(o.AccessToken, graphsim.DefaultPublicApp, us[2].ID); r.Status != http.StatusOK {
		t.Errorf("delegated, own presence: %d %s", r.Status, r.Body)
	}
	if got := shown(t, s, o.AccessToken, us[2].ID); got != "Busy/InACall" {
		t.Errorf("own presence after a delegated write: %s", got)
	}
	forbidden("delegated, another user", set(o.AccessToken, graphsim.DefaultPublicApp, us[0].ID), "signed-in user", "Presence.ReadWrite.All")
	forbidden("delegated, another user's clear", write(t, s, clearPath, o.AccessToken, us[0].UPN, clearBody(graphsim.DefaultPublicApp)))
	if r := write(t, s, clearPath, o.AccessToken, us[2].UPN, clearBody(graphsim.DefaultPublicApp)); r.Status != http.StatusOK {
		t.Errorf("delegated, own clear: %d %s", r.Status, r.Body)
	}
}

// Writes count against the one presence throttle window of the application,
// beside getPresencesByUserId: a throttled write gets 429 with Retry-After and is
// recorded as such.
func TestPresenceWritesShareTheThrottle(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2, ThrottleLimit: 3, ThrottleWindow: 30 * time.Second})
	tok := appToken(t, s)
	id := s.Users()[0].ID
	read := func() reply {
		return do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(id))
	}
	set := func() reply {
		return write(t, s, setPath, tok, id, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", ""))
	}
	if r := read(); r.Status != 200 {
		t.Fatal(r.Status)
	}
	fc.Advance(time.Second)
	if r := set(); r.Status != 200 {
		t.Fatalf("write within the budget: %d %s", r.Status, r.Body)
	}
	fc.Advance(time.Second)
	if r := read(); r.Status != 200 {
		t.Fatal(r.Status)
	}
	fc.Advance(time.Second)
	r := set()
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "27" || r.graphErrorCode(t) != "TooManyRequests" {
		t.Errorf("write over the budget: %d Retry-After %q %s, want 429 after 27 s", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
	if r := read(); r.Status != http.StatusTooManyRequests {
		t.Errorf("read after the writes used the budget: %d, want 429", r.Status)
	}
	r = write(t, s, clearPath, tok, id, clearBody(graphsim.DefaultDaemonApp))
	if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("clear over the budget: %d %q", r.Status, r.Header.Get("Retry-After"))
	}
	fc.Advance(27 * time.Second)
	if r := write(t, s, clearPath, tok, id, clearBody(graphsim.DefaultDaemonApp)); r.Status != 200 {
		t.Errorf("clear after Retry-After: %d %s", r.Status, r.Body)
	}

	throttled := 0
	for _, w := range s.Writes() {
		if w.Status == http.StatusTooManyRequests {
			throttled++
			if w.RetryAfter == "" || w.App != graphsim.DefaultDaemonApp || w.Error != "TooManyRequests" {
				t.Errorf("throttled write recorded as %+v", w)
			}
		}
	}
	st := s.Stats()
	if throttled != 2 || st.Throttled != 3 || st.MaxInWindow[graphsim.DefaultDaemonApp] != 3 {
		t.Errorf("%d throttled writes recorded, Stats.Throttled %d, MaxInWindow %v; want 2, 3, 3", throttled, st.Throttled, st.MaxInWindow)
	}
}

// Each write is recorded: when, who, which pair, the expiration and the
// answer, scripted faults' answers included; ResetStats clears the record.
func TestPresenceWriteRecords(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2})
	tok := appToken(t, s)
	u := s.Users()[1]
	fc.Advance(time.Minute)
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InACall", "PT1H"))
	fc.Advance(time.Second)
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Busy", "InAMeeting", ""))
	s.InjectFault(graphsim.Fault{Path: "/presence/clearPresence", Status: 429, RetryAfter: "9"})
	write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp))
	write(t, s, clearPath, "", u.ID, clearBody(graphsim.DefaultDaemonApp))
	write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp))

	ws := s.Writes()
	if len(ws) != 5 {
		t.Fatalf("%d writes recorded, want 5: %+v", len(ws), ws)
	}
	want := graphsim.WriteRecord{At: t0.Add(time.Minute), Op: graphsim.OpSetPresence, User: u.ID, UPN: u.UPN,
		App: graphsim.DefaultDaemonApp, SessionID: graphsim.DefaultDaemonApp, Availability: "Busy", Activity: "InACall",
		ExpirationDuration: "PT1H", Expiration: time.Hour, Expires: t0.Add(time.Minute + time.Hour), Status: 200}
	if ws[0] != want || !ws[0].Accepted() {
		t.Errorf("accepted write recorded as\n%+v, want\n%+v", ws[0], want)
	}
	if w := ws[1]; w.Status != 400 || w.Error != "BadRequest" || w.Activity != "InAMeeting" || w.Accepted() || !w.Expires.IsZero() {
		t.Errorf("refused write recorded as %+v", w)
	}
	if w := ws[2]; w.Op != graphsim.OpClearPresence || w.User != u.ID || w.Status != 429 || w.RetryAfter != "9" || w.Error != "TooManyRequests" {
		t.Errorf("scripted 429 recorded as %+v", w)
	}
	if w := ws[3]; w.Status != 401 || w.App != "" || w.Error != "InvalidAuthenticationToken" {
		t.Errorf("write without a token recorded as %+v", w)
	}
	if w := ws[4]; w.Status != 200 || w.Op != graphsim.OpClearPresence || !w.At.Equal(t0.Add(time.Minute+time.Second)) {
		t.Errorf("clear recorded as %+v", w)
	}

	r := do(t, s, http.MethodGet, "/_sim/stats?requests=false", "", nil)
	var st graphsim.Stats
	r.json(t, &st)
	if len(st.Writes) != 5 || st.Writes[0].Expires.IsZero() || st.Endpoints["POST /v1.0/users/{id}/presence/setPresence"] != 2 {
		t.Errorf("/_sim/stats: %s", r.Body)
	}
	r = do(t, s, http.MethodGet, "/_sim/stats?writes=false", "", nil)
	st = graphsim.Stats{}
	r.json(t, &st)
	if len(st.Writes) != 0 || len(st.Requests) != 5 {
		t.Errorf("/_sim/stats?writes=false: %d writes, %d requests", len(st.Writes), len(st.Requests))
	}
	s.ResetStats()
	if n := len(s.Writes()); n != 0 {
		t.Errorf("%d writes after ResetStats", n)
	}
}

func TestSessionsControl(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 1})
	u := s.Users()[0]
	mustSet(t, s, u.UPN, "Offline", "OffWork")
	write(t, s, setPath, appToken(t, s), u.ID, setBody(graphsim.DefaultDaemonApp, "Away", "Away", "PT2H"))
	r := do(t, s, http.MethodGet, "/_sim/sessions?upn="+u.UPN, "", nil)
	var got struct {
		Availability, Activity string
		Sessions               []graphsim.Session
	}
	r.json(t, &got)
	if r.Status != 200 || got.Availability != "Away" || len(got.Sessions) != 1 || got.Sessions[0].SessionID != graphsim.DefaultDaemonApp ||
		!got.Sessions[0].Expires.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("%d %s", r.Status, r.Body)
	}
	if r := do(t, s, http.MethodGet, "/_sim/sessions?upn=nobody@contoso.example", "", nil); r.Status != 404 {
		t.Errorf("unknown user: %d", r.Status)
	}
}

// The engine moves the users' own state; a session above it hides those moves
// (Step counts only what Graph shows) until it is cleared.
func TestEngineUnderASession(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 1, ChangesPerUserPerHour: 60, AccessTokenLifetime: 24 * time.Hour})
	tok := appToken(t, s)
	u := s.Users()[0]
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "DoNotDisturb", "Presenting", "PT4H"))
	before := len(s.Changes(time.Time{}))
	fc.Advance(time.Hour)
	if n := s.Step(time.Hour); n != 0 {
		t.Errorf("Step under a DoNotDisturb session showed %d changes, want 0", n)
	}
	if len(s.Changes(time.Time{})) != before {
		t.Error("hidden client changes were recorded")
	}
	// Cleared, Graph shows where the engine took the user meanwhile.
	cleared := fc.Now()
	write(t, s, clearPath, tok, u.ID, clearBody(graphsim.DefaultDaemonApp))
	if got := shown(t, s, tok, u.ID); got == "DoNotDisturb/Presenting" {
		// The engine may have ended there too; then no change is recorded.
		if n := len(s.Changes(cleared.Add(-time.Nanosecond))); n != 0 {
			t.Errorf("%d changes recorded at the clear, Graph still shows the session's pair", n)
		}
	} else if ch := s.Changes(cleared.Add(-time.Nanosecond)); len(ch) != 1 || ch[0].Availability+"/"+ch[0].Activity != got {
		t.Errorf("after the clear Graph shows %s; changes recorded %+v", got, ch)
	}
	// Under an Away session the engine's moves show when they outrank it.
	write(t, s, setPath, tok, u.ID, setBody(graphsim.DefaultDaemonApp, "Away", "Away", "PT4H"))
	fc.Advance(time.Hour)
	from := fc.Now()
	n := s.Step(time.Hour)
	ch := s.Changes(from.Add(-time.Nanosecond))
	if n != len(ch) || n == 0 {
		t.Errorf("Step under an Away session reported %d changes, %d recorded; want the same, more than 0", n, len(ch))
	}
	for _, c := range ch {
		if c.Availability == "Offline" || c.Availability == "BeRightBack" {
			t.Errorf("change to %s/%s shown over an Away session", c.Availability, c.Activity)
		}
	}
}

// Writes, reads, the engine and expiries at once: the race detector's test.
func TestPresenceWritesConcurrently(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 20, ChangesPerUserPerHour: 600, ThrottleLimit: -1})
	tok := appToken(t, s)
	us := s.Users()
	// post is do without t.Fatal, for goroutines.
	post := func(path string, body string) (int, error) {
		req, err := http.NewRequest(http.MethodPost, s.URL()+path, strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := s.Client().Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	errs := make(chan error, 200)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				id := us[(g*5+i)%len(us)].ID
				op, body := setPath, `{"sessionId":"`+graphsim.DefaultDaemonApp+`","availability":"Busy","activity":"InACall"}`
				if i%3 == 2 {
					op, body = clearPath, `{"sessionId":"`+graphsim.DefaultDaemonApp+`"}`
				}
				st, err := post("/v1.0/users/"+id+"/presence/"+op, body)
				if err == nil && st != 200 && st != 404 {
					err = fmt.Errorf("%s %s: %d", op, id, st)
				}
				if err == nil {
					st, err = post("/v1.0/communications/getPresencesByUserId", `{"ids":["`+id+`"]}`)
					if err == nil && st != 200 {
						err = fmt.Errorf("read %s: %d", id, st)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 30 {
			fc.Advance(time.Minute)
			s.Step(time.Minute)
			s.Changes(time.Time{})
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fc.Advance(5 * time.Minute)
	for _, u := range us {
		if ss, _ := s.Sessions(u.UPN); len(ss) != 0 {
			t.Errorf("%s: sessions %+v after every expiry", u.UPN, ss)
		}
	}
	ch := s.Changes(time.Time{})
	for i := 1; i < len(ch); i++ {
		if ch[i].At.Before(ch[i-1].At) {
			t.Fatalf("change record out of order at %d: %v before %v", i, ch[i].At, ch[i-1].At)
		}
	}
	// What Graph shows is the last change recorded for each user.
	last := map[string]string{}
	for _, c := range ch {
		last[c.UPN] = c.Availability + "/" + c.Activity
	}
	for upn, want := range last {
		if av, ac, _ := s.Presence(upn); av+"/"+ac != want {
			t.Errorf("%s shows %s/%s, last recorded change %s", upn, av, ac, want)
		}
	}
}
