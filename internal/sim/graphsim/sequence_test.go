package graphsim_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

type seqPresence struct {
	ID             string `json:"id"`
	SequenceNumber string `json:"sequenceNumber"`
	Availability   string `json:"availability"`
	Activity       string `json:"activity"`
}

// readWays reads user u's presence the three ways Graph gives it:
// getPresencesByUserId, GET /users/{id}/presence and that inside a $batch.
func readWays(t *testing.T, s *graphsim.Server, tok string, u graphsim.User) [3]func() seqPresence {
	return [3]func() seqPresence{
		func() seqPresence {
			var p struct{ Value []seqPresence }
			r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(u.ID))
			r.json(t, &p)
			if r.Status != 200 || len(p.Value) != 1 {
				t.Fatalf("getPresencesByUserId: %d %s", r.Status, r.Body)
			}
			return p.Value[0]
		},
		func() seqPresence {
			var p seqPresence
			do(t, s, http.MethodGet, "/v1.0/users/"+u.ID+"/presence", tok, nil).json(t, &p)
			return p
		},
		func() seqPresence {
			var b struct {
				Responses []struct {
					Body seqPresence `json:"body"`
				} `json:"responses"`
			}
			do(t, s, http.MethodPost, "/v1.0/$batch", tok, batchOf("/users/"+u.ID+"/presence")).json(t, &b)
			return b.Responses[0].Body
		},
	}
}

func readAll(t *testing.T, s *graphsim.Server, tok string, u graphsim.User) [3]seqPresence {
	t.Helper()
	var out [3]seqPresence
	for i, read := range readWays(t, s, tok, u) {
		out[i] = read()
	}
	return out
}

func isSequence(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789ABCDEF", c) {
			return false
		}
	}
	return true
}

func TestSequenceNumber(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 3, ThrottleLimit: -1})
	tok := appToken(t, s)
	u := s.Users()[1]
	seen := []string{}
	check := func(step string, av, ac string) {
		t.Helper()
		got := readAll(t, s, tok, u)
		want, _ := s.SequenceNumber(u.UPN)
		for i, p := range got {
			if p.ID != u.ID || p.SequenceNumber != want || p.Availability != av || p.Activity != ac || !isSequence(p.SequenceNumber) {
				t.Fatalf("%s, read %d: %+v, want %s/%s with sequenceNumber %s (16 hex digits)", step, i, p, av, ac, want)
			}
		}
		if n := len(seen); n > 0 && got[0].SequenceNumber <= seen[n-1] {
			t.Fatalf("%s: sequenceNumber %s after %s: want it to grow with the change", step, got[0].SequenceNumber, seen[n-1])
		}
		seen = append(seen, got[0].SequenceNumber)
	}
	av, ac, _ := s.Presence(u.UPN)
	check("initial", av, ac)
	for i, p := range [][2]string{{"Busy", "InACall"}, {"Available", "Available"}, {"DoNotDisturb", "Presenting"}} {
		fc.Advance(time.Second)
		if _, err := s.SetPresence(u.UPN, p[0], p[1]); err != nil {
			t.Fatal(err)
		}
		check("change "+string(rune('1'+i)), p[0], p[1])
	}
	// The same pair again is no change: the number stays.
	before, _ := s.SequenceNumber(u.UPN)
	if _, err := s.SetPresence(u.UPN, "DoNotDisturb", "Presenting"); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.SequenceNumber(u.UPN); after != before {
		t.Errorf("no change, sequenceNumber %s -> %s", before, after)
	}
	// A session an application sets changes what Graph shows: so does the number.
	if _, err := s.SetPresence(s.Users()[0].UPN, "Available", "Available"); err != nil {
		t.Fatal(err)
	}
	before, _ = s.SequenceNumber(s.Users()[0].UPN)
	if r := do(t, s, http.MethodPost, "/v1.0/users/"+s.Users()[0].ID+"/presence/setPresence", tok,
		map[string]string{"sessionId": graphsim.DefaultDaemonApp, "availability": "Busy", "activity": "InACall"}); r.Status != 200 {
		t.Fatalf("setPresence: %d %s", r.Status, r.Body)
	}
	if after, _ := s.SequenceNumber(s.Users()[0].UPN); after <= before {
		t.Errorf("after setPresence: sequenceNumber %s -> %s, want it to grow", before, after)
	}
	// An upper-case id is found and answered with the directory's spelling.
	var p struct{ Value []seqPresence }
	do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(strings.ToUpper(u.ID), u.ID)).json(t, &p)
	if len(p.Value) != 2 || p.Value[0].ID != u.ID || p.Value[1].ID != u.ID || p.Value[0].SequenceNumber != seen[len(seen)-1] {
		t.Errorf("upper-case and lower-case id: %+v, want both as %s", p.Value, u.ID)
	}
	// A tenant started later numbers after this one.
	time.Sleep(2 * time.Millisecond)
	later, _ := startFake(t, graphsim.Options{Users: 3})
	if first, _ := later.SequenceNumber(u.UPN); first <= seen[len(seen)-1] {
		t.Errorf("a later tenant's first sequenceNumber %s is not above this one's %s", first, seen[len(seen)-1])
	}
}

func TestServeStale(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 3, ThrottleLimit: -1})
	tok := appToken(t, s)
	u := s.Users()[2]
	if _, err := s.ServeStale(u.UPN); !errors.Is(err, graphsim.ErrNoOlderPresence) {
		t.Fatalf("ServeStale before any change: %v, want ErrNoOlderPresence", err)
	}
	if _, err := s.ServeStale("nobody@contoso.example"); !errors.Is(err, graphsim.ErrUnknownUser) {
		t.Fatalf("ServeStale of nobody: %v", err)
	}
	if _, err := s.SetPresence(u.UPN, "Away", "Away"); err != nil {
		t.Fatal(err)
	}
	old, _ := s.SequenceNumber(u.UPN)
	if _, err := s.SetPresence(u.UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	cur, _ := s.SequenceNumber(u.UPN)

	// Each read path serves the older state once, then the current one again.
	for i, read := range readWays(t, s, tok, u) {
		seq, err := s.ServeStale(u.UPN)
		if err != nil || seq != old {
			t.Fatalf("ServeStale: %q, %v; want %s", seq, err, old)
		}
		if got := read(); got.SequenceNumber != old || got.Availability != "Away" {
			t.Errorf("path %d: the read after ServeStale %+v, want Away/Away with %s", i, got, old)
		}
		if got := read(); got.SequenceNumber != cur || got.Activity != "InACall" {
			t.Errorf("path %d: the read after that %+v, want the current Busy/InACall with %s", i, got, cur)
		}
	}
	if old >= cur {
		t.Errorf("the older sequenceNumber %s is not below the current %s", old, cur)
	}
	// Over the control API, answered by the $batch read.
	r := do(t, s, http.MethodPost, "/_sim/stale", "", map[string]string{"upn": u.UPN})
	if r.Status != 200 || !strings.Contains(string(r.Body), old) {
		t.Fatalf("POST /_sim/stale: %d %s", r.Status, r.Body)
	}
	if got := readWays(t, s, tok, u)[2](); got.SequenceNumber != old {
		t.Errorf("$batch read after POST /_sim/stale: %+v, want %s", got, old)
	}
	for _, tt := range []struct {
		body any
		want int
	}{{map[string]string{"upn": "nobody@contoso.example"}, 404}, {map[string]string{"upn": s.Users()[0].UPN}, 409}, {"{", 400}} {
		if r := do(t, s, http.MethodPost, "/_sim/stale", "", tt.body); r.Status != tt.want {
			t.Errorf("POST /_sim/stale %v: %d %s, want %d", tt.body, r.Status, r.Body, tt.want)
		}
	}
}
