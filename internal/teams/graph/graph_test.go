package graph

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }

func newSim(t *testing.T, users int) (*graphsim.Server, *Client) {
	t.Helper()
	sim := testkit.StartSim(t, graphsim.Options{Users: users})
	tok, err := sim.AppToken("presencebridge-daemon")
	if err != nil {
		t.Fatal(err)
	}
	return sim, New(sim.GraphURL(), sim.Client(), staticToken(tok))
}

func TestResolveAndReadPresence(t *testing.T) {
	sim, c := newSim(t, 700)
	ctx := context.Background()
	us := sim.Users()
	ask := []string{us[0].UPN, "nobody@contoso.example", us[1].UPN}
	found, notFound, err := c.ResolveUsers(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if found[us[0].UPN].ID != us[0].ID || found[us[1].UPN].ID != us[1].ID {
		t.Fatalf("found = %+v", found)
	}
	if len(notFound) != 1 || notFound[0] != "nobody@contoso.example" {
		t.Fatalf("notFound = %v", notFound)
	}
	if _, _, err := c.ResolveUsers(ctx, make([]string, 21)); err == nil {
		t.Fatal("21 users in one batch accepted")
	}

	if _, err := sim.SetPresence(us[0].UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 650)
	for i := range ids {
		ids[i] = us[i].ID
	}
	ps, err := c.GetPresences(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 650 {
		t.Fatalf("got %d presences for 650 ids", len(ps))
	}
	var got Presence
	for _, p := range ps {
		if p.ID == us[0].ID {
			got = p
		}
	}
	if got.Availability != "Busy" || got.Activity != "InACall" {
		t.Fatalf("presence of %s = %+v, want Busy/InACall", us[0].UPN, got)
	}
	if _, err := c.GetPresences(ctx, make([]string, 651)); err == nil {
		t.Fatal("651 ids accepted; Graph allows 650")
	}
	one, err := c.GetPresence(ctx, us[0].ID)
	if err != nil || one.Activity != "InACall" {
		t.Fatalf("GetPresence = %+v, %v", one, err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	sim, c := newSim(t, 10)
	ctx := context.Background()
	ids := []string{sim.Users()[0].ID}
	const path = "/communications/getPresencesByUserId"

	sim.InjectFault(graphsim.Fault{Path: path, Status: 429, RetryAfter: "7"})
	_, err := c.GetPresences(ctx, ids)
	var te *ThrottledError
	if !errors.As(err, &te) || !te.HasRetryAfter || te.RetryAfter != 7*time.Second {
		t.Fatalf("429 error = %v, want ThrottledError 7s", err)
	}

	sim.InjectFault(graphsim.Fault{Path: path, Status: 503})
	if _, err = c.GetPresences(ctx, ids); !IsTransient(err) {
		t.Fatalf("503 error %v is not transient", err)
	}

	bad := New(sim.GraphURL(), sim.Client(), staticToken("not-a-token"))
	_, err = bad.GetPresences(ctx, ids)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 401 || IsTransient(err) {
		t.Fatalf("bad token error = %v, want non-transient 401", err)
	}
}

func TestRetryAfterForms(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"12":                            12 * time.Second,
		"Sun, 22 Nov 2026 09:00:30 GMT": 30 * time.Second,
		" 7 ":                           7 * time.Second,
		"0":                             0,
		// Beyond an hour the wait is capped, also where the seconds would
		// overflow a time.Duration (into a negative wait: no pause at all).
		"86400":                         time.Hour,
		"9999999999":                    time.Hour,
		"99999999999999999999":          time.Hour,
		"Fri, 31 Dec 9999 23:59:59 GMT": time.Hour,
		"Sun, 22 Nov 2026 08:00:00 GMT": 0,
	} {
		if got := throttled(h, now); !got.HasRetryAfter || got.RetryAfter != want {
			t.Errorf("Retry-After %q = %+v, want %v", h, got, want)
		}
	}
	for _, h := range []string{"", "-1", "NaN", "1e3", "soon"} {
		if got := throttled(h, now); got.HasRetryAfter || got.RetryAfter != 0 {
			t.Errorf("Retry-After %q gave %+v; want none", h, got)
		}
	}
}

// A 200 without an object id is not a resolved user: its "" would go into every
// presence request of its chunk.
func TestResolvedUserNeedsAnID(t *testing.T) {
	upns := []string{"Anna@Contoso.example", "bert@contoso.example"}
	for _, body := range []string{`null`, `{}`, `{"userPrincipalName":"anna@contoso.example"}`} {
		var r batchReply
		raw := `{"responses":[{"id":"1","status":404},{"id":"0","status":200,"body":` + body + `}]}`
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			t.Fatal(err)
		}
		found, _, err := r.users(upns)
		if err == nil || !strings.HasPrefix(err.Error(), "resolve anna@contoso.example: ") {
			t.Errorf("body %s: found %v, error %v; want an error naming anna@contoso.example", body, found, err)
		}
	}
}

// renewingToken is a Renewer that hands out tokens from the simulated tenant and
// records what the Graph client asked of it.
type renewingToken struct {
	sim     *graphsim.Server
	tok     string
	claims  []string
	refused []string
}

func (r *renewingToken) Token(context.Context) (string, error) { return r.tok, nil }

func (r *renewingToken) Renew(_ context.Context, claims string) (string, error) {
	r.claims = append(r.claims, claims)
	var err error
	r.tok, err = r.sim.AppToken("presencebridge-daemon")
	return r.tok, err
}

func (r *renewingToken) Refused(tok, reason string) error {
	r.refused = append(r.refused, reason)
	return errors.New("refused: " + reason)
}

// A 401 is answered by renewing the token once (with the decoded claims challenge
// when Graph sent one) and sending the request again; a second 401 is reported
// to the token source.
func TestUnauthorizedRenewsTheTokenOnce(t *testing.T) {
	sim, _ := newSim(t, 3)
	tok, _ := sim.AppToken("presencebridge-daemon")
	rt := &renewingToken{sim: sim, tok: tok}
	c := New(sim.GraphURL(), sim.Client(), rt)
	ids := []string{sim.Users()[0].ID}
	ctx := context.Background()

	sim.RevokeSessions(graphsim.RevokeOptions{KeepRefreshTokens: true, ClaimsChallenge: true})
	if _, err := c.GetPresences(ctx, ids); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
	if len(rt.claims) != 1 || !strings.HasPrefix(rt.claims[0], `{"access_token":{"nbf":{"essential":true,"value":"`) {
		t.Fatalf("Renew was asked with claims %q, want the decoded challenge once", rt.claims)
	}
	if _, err := c.GetPresences(ctx, ids); err != nil || len(rt.claims) != 1 {
		t.Fatalf("the renewed token: %v, %d renewals", err, len(rt.claims))
	}

	sim.RevokeSessions(graphsim.RevokeOptions{})
	if _, err := c.GetPresences(ctx, ids); err != nil || len(rt.claims) != 2 || rt.claims[1] != "" {
		t.Fatalf("a revocation without a challenge: %v, claims %q", err, rt.claims)
	}
	if len(rt.refused) != 0 {
		t.Fatalf("Refused called: %q", rt.refused)
	}

	// Graph refuses every token, new ones too.
	sim.InjectFault(graphsim.Fault{Path: "/v1.0/communications/getPresencesByUserId", Status: 401, Count: 2})
	_, err := c.GetPresences(ctx, ids)
	if err == nil || len(rt.refused) != 1 || !strings.Contains(rt.refused[0], "401") || len(rt.claims) != 3 {
		t.Fatalf("two 401s: %v; refused %q, claims %q", err, rt.refused, rt.claims)
	}
}

// One lookup Graph cannot take (400, an identifier it refuses) is not found,
// like a 404, instead of failing the lookups of the 19 others in its $batch.
func TestBatchBadRequestIsNotFound(t *testing.T) {
	raw := `{"responses":[{"id":"0","status":200,"body":{"id":"id-a","userPrincipalName":"a@x"}},
		{"id":"1","status":400,"body":{"error":{"code":"Request_BadRequest","message":"Invalid object identifier 'b#c@x'."}}},
		{"id":"2","status":404,"body":{"error":{"code":"Request_ResourceNotFound"}}}]}`
	var reply batchReply
	if err := json.Unmarshal([]byte(raw), &reply); err != nil {
		t.Fatal(err)
	}
	found, notFound, err := reply.users([]string{"a@x", "b#c@x", "d@x"})
	if err != nil || found["a@x"].ID != "id-a" || !slices.Equal(notFound, []string{"b#c@x", "d@x"}) {
		t.Fatalf("users = %v, %v, %v", found, notFound, err)
	}
}
