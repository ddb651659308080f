package graphsim_test

import (
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

func TestSetPresenceAndChanges(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 3})
	u := s.Users()
	before := fc.Now()

	at1, err := s.SetPresence(u[0].UPN, "Busy", "InAConferenceCall")
	if err != nil {
		t.Fatal(err)
	}
	fc.Advance(time.Second)
	at2, err := s.SetPresence(u[1].ID, "inACall", "Focusing") // any values, by id too
	if err != nil {
		t.Fatal(err)
	}
	if !at1.Equal(t0) || !at2.Equal(t0.Add(time.Second)) {
		t.Errorf("change times %v %v, want the injected clock's %v and +1s", at1, at2, t0)
	}
	if av, ac, ok := s.Presence(u[1].UPN); !ok || av != "inACall" || ac != "Focusing" {
		t.Errorf("Presence = %q %q %v", av, ac, ok)
	}

	// Setting the same presence again is no change: no record, the old time back.
	fc.Advance(time.Second)
	again, err := s.SetPresence(u[0].UPN, "Busy", "InAConferenceCall")
	if err != nil || !again.Equal(at1) {
		t.Errorf("repeat SetPresence = %v, %v; want the first change time %v", again, err, at1)
	}

	all := s.Changes(time.Time{})
	want := []graphsim.Change{
		{UPN: u[0].UPN, ID: u[0].ID, Availability: "Busy", Activity: "InAConferenceCall", At: t0},
		{UPN: u[1].UPN, ID: u[1].ID, Availability: "inACall", Activity: "Focusing", At: t0.Add(time.Second)},
	}
	if len(all) != len(want) {
		t.Fatalf("Changes = %+v, want %+v", all, want)
	}
	for i := range want {
		if all[i].UPN != want[i].UPN || all[i].ID != want[i].ID || all[i].Availability != want[i].Availability ||
			all[i].Activity != want[i].Activity || !all[i].At.Equal(want[i].At) {
			t.Errorf("Changes[%d] = %+v, want %+v", i, all[i], want[i])
		}
	}
	if got := s.Changes(before); len(got) != 1 || got[0].UPN != u[1].UPN {
		t.Errorf("Changes(since first change) = %+v, want only the second (strictly after since)", got)
	}

	if _, err := s.SetPresence("nobody@contoso.example", "Busy", "Busy"); !errors.Is(err, graphsim.ErrUnknownUser) {
		t.Errorf("unknown user: err = %v, want ErrUnknownUser", err)
	}
	if _, err := s.SetPresence(u[0].UPN, "", "Busy"); err == nil {
		t.Error("empty availability accepted")
	}
	if _, _, ok := s.Presence("nobody@contoso.example"); ok {
		t.Error("Presence of an unknown user ok")
	}
}

func TestUsersSpreadOverDomains(t *testing.T) {
	s, err := graphsim.New(graphsim.Options{Users: 4, Domains: []string{"Contoso.example", "fabrikam.example"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"user00001@contoso.example", "user00002@fabrikam.example", "user00003@contoso.example", "user00004@fabrikam.example"}
	ids := map[string]bool{}
	for i, u := range s.Users() {
		if u.UPN != want[i] || u.Mail != u.UPN || u.DisplayName == "" || len(u.ID) != 36 {
			t.Errorf("user %d = %+v, want UPN %s with mail, name and a GUID", i, u, want[i])
		}
		ids[u.ID] = true
	}
	if len(ids) != 4 {
		t.Error("user ids are not unique")
	}
	again, _ := graphsim.New(graphsim.Options{Users: 4, Domains: []string{"contoso.example", "fabrikam.example"}})
	if again.Users()[3].ID != s.Users()[3].ID {
		t.Error("user ids differ between runs")
	}
}

func TestEngineRate(t *testing.T) {
	const users, rate = 1000, 60.0 // one change per user per minute
	s, fc := startFake(t, graphsim.Options{Users: users, ChangesPerUserPerHour: rate, Seed: 7})
	total := 0
	for range 10 {
		fc.Advance(6 * time.Second)
		total += s.Step(6 * time.Second)
	}
	if want := int(users * rate / 60); total != want {
		t.Errorf("changes in one minute = %d, want %d (users × rate × time)", total, want)
	}
	changes := s.Changes(time.Time{})
	if len(changes) != total {
		t.Fatalf("Changes recorded %d, Step reported %d", len(changes), total)
	}
	perUser := map[string]int{}
	states := map[[2]string]int{}
	for _, c := range changes {
		perUser[c.UPN]++
		states[[2]string{c.Availability, c.Activity}]++
		if c.At.Before(t0) || c.At.After(fc.Now()) {
			t.Fatalf("change at %v outside the stepped minute", c.At)
		}
	}
	if len(perUser) < users/2 {
		t.Errorf("%d users changed, want the changes spread over most of the %d users", len(perUser), users)
	}
	for _, st := range [][2]string{{"Available", "Available"}, {"Busy", "InACall"}, {"Busy", "InAMeeting"}, {"Away", "Away"},
		{"AvailableIdle", "Available"}, {"Offline", "OffWork"}} {
		if states[st] == 0 {
			t.Errorf("no change to %v in %d changes", st, total)
		}
	}
	// Presence reflects the last recorded change of each user.
	last := map[string]graphsim.Change{}
	for _, c := range changes {
		last[c.UPN] = c
	}
	for upn, c := range last {
		if av, ac, _ := s.Presence(upn); av != c.Availability || ac != c.Activity {
			t.Fatalf("%s: Presence %s/%s, last change %s/%s", upn, av, ac, c.Availability, c.Activity)
		}
	}
	if st := s.Stats(); st.Changes != total {
		t.Errorf("Stats.Changes = %d, want %d", st.Changes, total)
	}
}

func TestEngineFractionalRateAndSeed(t *testing.T) {
	run := func(seed int64) []graphsim.Change {
		s, err := graphsim.New(graphsim.Options{Users: 50, ChangesPerUserPerHour: 2, Seed: seed, Clock: clock.NewFake(t0)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for range 3600 { // one hour in 1 s steps: 0.0278 changes a step
			n += s.Step(time.Second)
		}
		if math.Abs(float64(n)-100) > 1 {
			t.Errorf("seed %d: %d changes in an hour, want 100 (50 users × 2)", seed, n)
		}
		return s.Changes(time.Time{})
	}
	a, b, c := run(1), run(1), run(2)
	same := func(x, y []graphsim.Change) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i].UPN != y[i].UPN || x[i].Availability != y[i].Availability || x[i].Activity != y[i].Activity {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("the same seed gave different changes")
	}
	if same(a, c) {
		t.Error("different seeds gave the same changes")
	}
}

func TestEngineStatic(t *testing.T) {
	s, err := graphsim.New(graphsim.Options{Users: 10})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Step(time.Hour); n != 0 {
		t.Errorf("static tenant changed %d presences", n)
	}
}

func TestEngineGoroutineFollowsClock(t *testing.T) {
	fc := clock.NewFake(t0)
	s := start(t, graphsim.Options{Users: 100, ChangesPerUserPerHour: 36, Clock: fc, EngineTick: time.Millisecond})
	if n := len(s.Changes(time.Time{})); n != 0 {
		t.Fatalf("%d changes before the clock moved", n)
	}
	fc.Advance(time.Minute) // 100 × 36/h × 1 min = 60 changes due
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Changes(time.Time{})) < 60 {
		if time.Now().After(deadline) {
			t.Fatalf("engine goroutine made %d of 60 changes", len(s.Changes(time.Time{})))
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLargeTenant(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000 users")
	}
	s, _ := startFake(t, graphsim.Options{Users: 50000, ChangesPerUserPerHour: 6, ThrottleLimit: -1})
	users := s.Users()
	if n := s.Step(time.Minute); n != 5000 {
		t.Errorf("Step(1m) on 50,000 users at 6/h = %d changes, want 5000", n)
	}
	tok := appToken(t, s)
	ids := make([]string, 650)
	for i := range ids {
		ids[i] = users[49350+i].ID
	}
	r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(ids...))
	var p presenceReply
	r.json(t, &p)
	if r.Status != 200 || len(p.Value) != 650 || p.Value[649].ID != users[49999].ID {
		t.Errorf("last chunk of 50,000: %d, %d presences", r.Status, len(p.Value))
	}
}

func TestNewRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:443", ":8443", "example.com:443"} {
		if _, err := graphsim.New(graphsim.Options{Addr: addr}); err == nil {
			t.Errorf("Addr %q accepted", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		if _, err := graphsim.New(graphsim.Options{Addr: addr}); err != nil {
			t.Errorf("Addr %q: %v", addr, err)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts graphsim.Options
	}{
		{"negative users", graphsim.Options{Users: -1}},
		{"negative rate", graphsim.Options{ChangesPerUserPerHour: -1}},
		{"bad domain", graphsim.Options{Domains: []string{"a@b"}}},
		{"app without id", graphsim.Options{Apps: []graphsim.App{{Secret: "x"}}}},
		{"duplicate app", graphsim.Options{Apps: []graphsim.App{{ClientID: "a"}, {ClientID: "a"}}}},
		{"bad cert", graphsim.Options{Apps: []graphsim.App{{ClientID: "a", CertPEM: []byte("not pem")}}}},
	}
	for _, tt := range tests {
		if _, err := graphsim.New(tt.opts); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
