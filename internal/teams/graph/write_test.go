package graph

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

const daemon = graphsim.DefaultDaemonApp

var inACall = SetPresence{SessionID: daemon, Availability: presence.Busy, Activity: presence.ActInACall}

func shownPresence(t *testing.T, c *Client, id string) string {
	t.Helper()
	ps, err := c.GetPresences(context.Background(), []string{id})
	if err != nil || len(ps) != 1 {
		t.Fatalf("GetPresences: %v, %v", ps, err)
	}
	return ps[0].Availability + "/" + ps[0].Activity
}

// An accepted write changes what GetPresences returns; a clear restores the
// user's own state; clearing again is ErrNoSession.
func TestSetAndClearPresence(t *testing.T) {
	sim, c := newSim(t, 3)
	ctx := context.Background()
	u := sim.Users()[1]
	if _, err := sim.SetPresence(u.UPN, "Available", "Available"); err != nil {
		t.Fatal(err)
	}
	p := inACall
	p.Expiration = time.Hour
	if err := c.SetPresence(ctx, u.ID, p); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	if got := shownPresence(t, c, u.ID); got != "Busy/InACall" {
		t.Errorf("after SetPresence Graph shows %s, want Busy/InACall", got)
	}
	ws := sim.Writes()
	if len(ws) != 1 || !ws[0].Accepted() || ws[0].SessionID != daemon || ws[0].ExpirationDuration != "PT1H" || ws[0].Expiration != time.Hour {
		t.Errorf("the simulated tenant saw %+v, want one accepted write with expirationDuration PT1H", ws)
	}

	if err := c.ClearPresence(ctx, u.ID, daemon); err != nil {
		t.Fatalf("ClearPresence: %v", err)
	}
	if got := shownPresence(t, c, u.ID); got != "Available/Available" {
		t.Errorf("after ClearPresence Graph shows %s, want the user's own Available/Available", got)
	}
	err := c.ClearPresence(ctx, u.ID, daemon)
	var se *StatusError
	if !errors.Is(err, ErrNoSession) || !errors.As(err, &se) || se.Status != 404 {
		t.Errorf("second ClearPresence: %v, want ErrNoSession wrapping a 404 StatusError", err)
	}
	if err := c.ClearPresence(ctx, "00000000-0000-0000-0000-000000000000", daemon); !errors.Is(err, ErrNoSession) {
		t.Errorf("ClearPresence of a user Graph does not know: %v, want ErrNoSession", err)
	}
	// Without an expiration Graph's default applies (PT5M).
	if err := c.SetPresence(ctx, u.ID, inACall); err != nil {
		t.Fatal(err)
	}
	if ss, _ := sim.Sessions(u.ID); len(ss) != 1 || ss[0].Expires.Sub(ss[0].Set) != 5*time.Minute {
		t.Errorf("sessions %+v, want one of 5 minutes", ss)
	}
	if last := sim.Writes()[len(sim.Writes())-1]; last.ExpirationDuration != "" {
		t.Errorf("expirationDuration sent %q, want it left out", last.ExpirationDuration)
	}
}

// Expiration goes over the wire as an ISO 8601 duration that Graph reads back
// as the same duration.
func TestExpirationIsISO8601(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "PT5M"},
		{90 * time.Minute, "PT1H30M"},
		{4 * time.Hour, "PT4H"},
		{300 * time.Second, "PT5M"},
		{time.Hour + 30*time.Second, "PT1H30S"},
		{10*time.Minute + 500*time.Millisecond, "PT10M0.5S"},
		{2*time.Hour + 3*time.Minute + 4*time.Second, "PT2H3M4S"},
	}
	sim, c := newSim(t, 1)
	id := sim.Users()[0].ID
	for _, tt := range tests {
		if got := isoDuration(tt.d); got != tt.want {
			t.Errorf("isoDuration(%s) = %q, want %q", tt.d, got, tt.want)
		}
		p := inACall
		p.Expiration = tt.d
		if err := c.SetPresence(context.Background(), id, p); err != nil {
			t.Errorf("SetPresence with %s: %v", tt.d, err)
			continue
		}
		if w := sim.Writes(); w[len(w)-1].Expiration != tt.d {
			t.Errorf("Graph read %q as %s, want %s", w[len(w)-1].ExpirationDuration, w[len(w)-1].Expiration, tt.d)
		}
	}
	if got := isoDuration(0); got != "" {
		t.Errorf("isoDuration(0) = %q, want empty (Graph's default)", got)
	}
	p := inACall
	p.Expiration = -time.Minute
	if err := c.SetPresence(context.Background(), id, p); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative expiration: %v", err)
	}
}

// Graph's refusals arrive typed: 403 names the permission and the fix, 400 a
// pair Graph does not take, 429 the wait.
func TestWriteErrors(t *testing.T) {
	ctx := context.Background()
	fc := clock.NewFake(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	sim := testkit.StartSim(t, graphsim.Options{Users: 2, Clock: fc, ManualEngine: true, ThrottleLimit: 4})
	tok, _ := sim.AppToken(daemon)
	c := New(sim.GraphURL(), sim.Client(), staticToken(tok))
	u := sim.Users()[0]

	t.Run("400 pair", func(t *testing.T) {
		err := c.SetPresence(ctx, u.ID, SetPresence{SessionID: daemon, Availability: presence.Busy, Activity: presence.ActInAMeeting})
		var se *StatusError
		if !errors.As(err, &se) || se.Status != 400 || se.Code != "BadRequest" || IsTransient(err) || errors.Is(err, ErrNoSession) {
			t.Errorf("Busy/InAMeeting: %v, want a non-transient 400 BadRequest", err)
		}
	})

	t.Run("403 without the permission", func(t *testing.T) {
		if err := sim.SetAppRole(daemon, graphsim.RolePresenceWrite, false); err != nil {
			t.Fatal(err)
		}
		defer sim.SetAppRole(daemon, graphsim.RolePresenceWrite, true)
		reader, _ := sim.AppToken(daemon)
		rc := New(sim.GraphURL(), sim.Client(), staticToken(reader))
		for name, err := range map[string]error{
			"set":   rc.SetPresence(ctx, u.ID, inACall),
			"clear": rc.ClearPresence(ctx, u.ID, daemon),
		} {
			var se *StatusError
			if !errors.As(err, &se) || se.Status != 403 || errors.Is(err, ErrNoSession) {
				t.Errorf("%s: %v, want a 403 StatusError", name, err)
				continue
			}
			for _, want := range []string{"Presence.ReadWrite.All", "grant admin consent", "App registrations", "device-code", u.ID} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: %q does not say %q", name, err, want)
				}
			}
		}
	})

	t.Run("429", func(t *testing.T) {
		sim.ResetStats()
		fc.Advance(time.Minute) // an empty throttle window
		if err := c.SetPresence(ctx, u.ID, inACall); err != nil {
			t.Fatal(err)
		}
		fc.Advance(10 * time.Second)
		for range 3 {
			if _, err := c.GetPresences(ctx, []string{u.ID}); err != nil {
				t.Fatal(err)
			}
		}
		var te *ThrottledError
		if err := c.SetPresence(ctx, u.ID, inACall); !errors.As(err, &te) || !te.HasRetryAfter || te.RetryAfter != 20*time.Second {
			t.Errorf("SetPresence over the budget: %v, want ThrottledError with Retry-After 20s", err)
		}
		if err := c.ClearPresence(ctx, u.ID, daemon); !errors.As(err, &te) || errors.Is(err, ErrNoSession) {
			t.Errorf("ClearPresence over the budget: %v, want ThrottledError", err)
		}
		// A scripted 429 with its own Retry-After.
		fc.Advance(time.Minute)
		sim.InjectFault(graphsim.Fault{Path: "/presence/setPresence", Status: 429, RetryAfter: "7"})
		if err := c.SetPresence(ctx, u.ID, inACall); !errors.As(err, &te) || te.RetryAfter != 7*time.Second {
			t.Errorf("scripted 429: %v, want ThrottledError 7s", err)
		}
		n := 0
		for _, w := range sim.Writes() {
			if w.Status == 429 {
				n++
			}
		}
		if n != 3 {
			t.Errorf("the tenant recorded %d throttled writes, want 3", n)
		}
	})
}

// A write whose token Graph refuses (401) renews the token once, like a read.
func TestWriteRenewsTheToken(t *testing.T) {
	sim, _ := newSim(t, 2)
	tok, _ := sim.AppToken(daemon)
	rt := &renewingToken{sim: sim, tok: tok}
	c := New(sim.GraphURL(), sim.Client(), rt)
	id := sim.Users()[0].ID
	sim.RevokeSessions(graphsim.RevokeOptions{KeepRefreshTokens: true})
	if err := c.SetPresence(context.Background(), id, inACall); err != nil || len(rt.claims) != 1 {
		t.Fatalf("SetPresence after a revocation: %v, %d renewals; want success after one", err, len(rt.claims))
	}
	sim.RevokeSessions(graphsim.RevokeOptions{KeepRefreshTokens: true})
	if err := c.ClearPresence(context.Background(), id, daemon); err != nil || len(rt.claims) != 2 {
		t.Fatalf("ClearPresence after a revocation: %v, %d renewals", err, len(rt.claims))
	}
}
