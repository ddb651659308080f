package graph

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// lookupUsers are the users of the lookup tests beyond the generated ones:
// a UPN that is not the address, a guest, quotes, characters a query must
// escape, two users sharing a mail.
var lookupUsers = []graphsim.User{
	{UPN: "j.smith@contoso.example", Mail: "john.smith@contoso.example", DisplayName: "John Smith"},
	{UPN: "ann_fabrikam.example#EXT#@contoso.example", Mail: "ann@fabrikam.example", DisplayName: "Ann (Fabrikam)"},
	{UPN: "o'brien@contoso.example", Mail: "pat.o'brien@contoso.example", DisplayName: "Pat O'Brien"},
	{UPN: "rd.team@contoso.example", Mail: "r&d+teams=1%@contoso.example", DisplayName: "R&D"},
	{UPN: "desk1@contoso.example", Mail: "frontdesk@contoso.example", DisplayName: "Front desk 1"},
	{UPN: "desk2@contoso.example", Mail: "frontdesk@contoso.example", DisplayName: "Front desk 2"},
}

// lookupSim is a tenant of n generated users and lookupUsers on a fake clock,
// and a client of it.
func lookupSim(t *testing.T, n int, opts graphsim.Options) (*graphsim.Server, *Client, *clock.Fake) {
	t.Helper()
	fc := clock.NewFake(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	opts.Users, opts.ExtraUsers, opts.Clock, opts.ManualEngine = n, lookupUsers, fc, true
	sim := testkit.StartSim(t, opts)
	tok, err := sim.AppToken("presencebridge-daemon")
	if err != nil {
		t.Fatal(err)
	}
	return sim, New(sim.GraphURL(), sim.Client(), staticToken(tok)), fc
}

func byUPN(sim *graphsim.Server) map[string]graphsim.User {
	m := map[string]graphsim.User{}
	for _, u := range sim.Users() {
		m[strings.ToLower(u.UPN)] = u
	}
	return m
}

// batches are the $batch requests the tenant answered.
func batches(sim *graphsim.Server) []graphsim.RequestRecord {
	var out []graphsim.RequestRecord
	for _, r := range sim.Stats().Requests {
		if r.Path == "/v1.0/$batch" {
			out = append(out, r)
		}
	}
	return out
}

func TestFindByUPN(t *testing.T) {
	sim, c, _ := lookupSim(t, 320, graphsim.Options{})
	ctx := context.Background()
	users := sim.Users()
	ask := make([]string, 0, MaxLookup)
	for i := range MaxLookup {
		upn := users[i].UPN
		if i%7 == 0 {
			upn = strings.ToUpper(upn) // as a users file may spell it
		}
		ask = append(ask, upn)
	}
	ask[299] = "nobody@contoso.example"
	got, err := c.FindByUPN(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Found) != 299 || !slices.Equal(got.Missing, []string{"nobody@contoso.example"}) || len(got.Retry) != 0 || got.RetryAfter != 0 {
		t.Fatalf("found %d, missing %v, retry %v (%v); want 299 found and nobody missing", len(got.Found), got.Missing, got.Retry, got.RetryAfter)
	}
	for i, upn := range ask[:299] {
		u := got.Found[strings.ToLower(upn)]
		if u.ID != users[i].ID || u.UPN != users[i].UPN || u.Mail != users[i].Mail || u.DisplayName != users[i].DisplayName {
			t.Fatalf("Found[%s] = %+v, want %+v", strings.ToLower(upn), u, users[i])
		}
	}
	b := batches(sim)
	if len(b) != 1 || b[0].IDs != MaxBatch || b[0].Status != 200 || b[0].RU != MaxBatch {
		t.Fatalf("$batch requests %+v; want one of 20 filters, 1 resource unit each", b)
	}

	sim.ResetStats()
	if _, err := c.FindByUPN(ctx, append(ask, "one@too.many")); err == nil || !strings.Contains(err.Error(), "301") {
		t.Errorf("301 UPNs: %v, want an error naming 301", err)
	}
	if _, err := c.FindByMail(ctx, make([]string, MaxLookup+1)); err == nil {
		t.Error("301 addresses accepted")
	}
	if n := len(sim.Stats().Requests); n != 0 {
		t.Errorf("the refused lookups sent %d requests", n)
	}

	// Repeats are asked once; nothing askable sends nothing.
	got, err = c.FindByUPN(ctx, []string{users[0].UPN, strings.ToUpper(users[0].UPN)})
	if err != nil || len(got.Found) != 1 || len(got.Missing) != 0 {
		t.Errorf("a UPN twice: %+v, %v", got, err)
	}
	sim.ResetStats()
	got, err = c.FindByUPN(ctx, []string{"", "no-at-sign", "two words@contoso.example", "tab\t@contoso.example", "@contoso.example", "x@",
		strings.Repeat("a", 65) + "@" + strings.Repeat("b", 48)})
	if err != nil || len(got.Missing) != 7 || len(got.Found) != 0 || len(sim.Stats().Requests) != 0 {
		t.Errorf("values that cannot be UPNs: %+v, %v, %d requests; want all Missing, none sent", got, err, len(sim.Stats().Requests))
	}
}

func TestFindByMailAndOddValues(t *testing.T) {
	sim, c, _ := lookupSim(t, 3, graphsim.Options{})
	ctx := context.Background()
	u := byUPN(sim)
	guest := u["ann_fabrikam.example#ext#@contoso.example"]

	// By UPN: the guest by its #EXT# UPN, the quote, and not j.smith by his address.
	got, err := c.FindByUPN(ctx, []string{"ANN_fabrikam.example#EXT#@contoso.example", "O'Brien@contoso.example", "john.smith@contoso.example", "rd.team@contoso.example"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Found["ann_fabrikam.example#ext#@contoso.example"].ID != guest.ID || got.Found["o'brien@contoso.example"].ID != u["o'brien@contoso.example"].ID ||
		got.Found["rd.team@contoso.example"].ID == "" || !slices.Equal(got.Missing, []string{"john.smith@contoso.example"}) {
		t.Fatalf("by UPN: %+v", got)
	}

	// By mail: guests and users whose UPN is not their address, keyed by the address asked.
	got, err = c.FindByMail(ctx, []string{"Ann@Fabrikam.example", "john.smith@contoso.example", "PAT.O'BRIEN@contoso.example",
		"r&d+teams=1%@contoso.example", "j.smith@contoso.example", "frontdesk@contoso.example", "nobody@contoso.example"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ann@fabrikam.example": guest.ID, "john.smith@contoso.example": u["j.smith@contoso.example"].ID,
		"pat.o'brien@contoso.example": u["o'brien@contoso.example"].ID, "r&d+teams=1%@contoso.example": u["rd.team@contoso.example"].ID}
	if len(got.Found) != len(want) {
		t.Errorf("by mail found %v, want %v", got.Found, want)
	}
	for k, id := range want {
		if got.Found[k].ID != id {
			t.Errorf("by mail, Found[%s] = %+v, want id %s", k, got.Found[k], id)
		}
	}
	if !slices.Equal(got.Missing, []string{"j.smith@contoso.example", "frontdesk@contoso.example", "nobody@contoso.example"}) ||
		!slices.Equal(got.Ambiguous, []string{"frontdesk@contoso.example"}) || len(got.Retry) != 0 {
		t.Errorf("by mail: missing %v, ambiguous %v, retry %v; want the UPN, the shared mail (ambiguous) and nobody missing", got.Missing, got.Ambiguous, got.Retry)
	}
	// What the tenant was asked: the values decoded back as sent.
	for _, r := range batches(sim) {
		if r.Status != 200 || r.ItemsThrottled != 0 {
			t.Errorf("a $batch answered %+v", r)
		}
	}
}

func TestLookupUPNs(t *testing.T) {
	sim, c, _ := lookupSim(t, 25, graphsim.Options{})
	ctx := context.Background()
	users := sim.Users()
	ask := []string{users[0].UPN, "nobody@contoso.example", "ann_fabrikam.example#EXT#@contoso.example", "o'brien@contoso.example", "no-at-sign", users[0].ID}
	got, err := c.LookupUPNs(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Found) != 3 || got.Found[strings.ToLower(users[0].UPN)].ID != users[0].ID || got.Found["o'brien@contoso.example"].ID == "" ||
		got.Found["ann_fabrikam.example#ext#@contoso.example"].ID == "" || !slices.Equal(got.Missing, []string{"nobody@contoso.example", "no-at-sign", users[0].ID}) {
		t.Fatalf("LookupUPNs: %+v", got)
	}
	if _, err := c.LookupUPNs(ctx, make([]string, MaxBatch+1)); err == nil {
		t.Error("21 UPNs accepted")
	}
}

// Graph throttles a lookup's requests one by one (Retry, with the longest
// Retry-After) or the $batch as a whole (*ThrottledError).
func TestLookupThrottled(t *testing.T) {
	sim, c, fc := lookupSim(t, 400, graphsim.Options{DirectoryLimit: 12})
	ctx := context.Background()
	users := sim.Users()
	ask := make([]string, MaxLookup)
	for i := range ask {
		ask[i] = users[i].UPN
	}
	got, err := c.FindByUPN(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	// 12 resource units: 12 filters of 15 answered, 8 throttled.
	if len(got.Found) != 12*MaxFilterValues || len(got.Retry) != 8*MaxFilterValues || len(got.Missing) != 0 || got.RetryAfter != 10*time.Second {
		t.Fatalf("found %d, retry %d, missing %d, RetryAfter %v; want 180, 120, 0, 10s", len(got.Found), len(got.Retry), len(got.Missing), got.RetryAfter)
	}
	if !slices.Equal(got.Retry, ask[180:]) {
		t.Errorf("Retry = %v..., want the last 120 asked, in order", got.Retry[:3])
	}
	if st := sim.Stats(); st.DirectoryThrottled != 8 {
		t.Errorf("the tenant throttled %d requests, want 8", st.DirectoryThrottled)
	}
	fc.Advance(5 * time.Second)
	got, err = c.LookupUPNs(ctx, ask[:3])
	if err != nil || len(got.Retry) != 3 || got.RetryAfter != 5*time.Second {
		t.Errorf("per-UPN lookups while throttled: %+v, %v; want all three to retry after 5s", got, err)
	}

	fc.Advance(time.Minute)
	sim.SetDirectoryThrottle(graphsim.DirectoryThrottle{Limit: 12, WholeBatch: true})
	if got, err := c.LookupUPNs(ctx, ask[:1]); err != nil || len(got.Found) != 1 {
		t.Fatalf("one lookup: %+v, %v", got, err)
	}
	_, err = c.FindByMail(ctx, ask) // 20 units on top of 1, against 12
	var te *ThrottledError
	if !errors.As(err, &te) || !te.HasRetryAfter || te.RetryAfter != 10*time.Second {
		t.Fatalf("a whole $batch throttled: %v, want a *ThrottledError of 10s", err)
	}
}

// A request Graph refuses (not a throttle, not transient) fails the call with
// the values it asked; a 5xx or no answer is Retry.
func TestLookupRequestErrors(t *testing.T) {
	p := planLookup("mail", []string{"a@x", "B@x", "c@x"}, 2)
	reply := func(raw string) *batchReply {
		var r batchReply
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	_, err := p.read(reply(`{"responses":[{"id":"1","status":200,"body":{"value":[]}},
		{"id":"0","status":403,"body":{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}}]}`))
	var ie *ItemError
	var se *StatusError
	if !errors.As(err, &ie) || !slices.Equal(ie.Values, []string{"a@x", "b@x"}) || !errors.As(err, &se) || se.Code != "Authorization_RequestDenied" ||
		err.Error() != "lookup of mail a@x (and 1 more in its request): Graph answered 403 Authorization_RequestDenied: Insufficient privileges to complete the operation." {
		t.Errorf("403: %v", err)
	}
	got, err := p.read(reply(`{"responses":[{"id":"0","status":503,"headers":{"Retry-After":"30"}}]}`))
	if err != nil || !slices.Equal(got.Retry, []string{"a@x", "b@x", "c@x"}) || got.RetryAfter != 0 {
		t.Errorf("503 and no answer: %+v, %v; want all Retry, no Retry-After (only 429s give one)", got, err)
	}
	_, err = p.read(reply(`{"responses":[{"id":"0","status":400,"body":{"error":{"code":"Request_UnsupportedQuery","message":"Too many child clauses"}}}]}`))
	if !errors.As(err, &ie) || ie.Err.Status != 400 {
		t.Errorf("a filter answered 400: %v, want an *ItemError", err)
	}
	_, err = p.read(reply(`{"responses":[{"id":"0","status":200,"body":{"value":[{"mail":"a@x"}]}}]}`))
	if err == nil || !strings.HasPrefix(err.Error(), "lookup of a@x: ") {
		t.Errorf("a user without an id: %v", err)
	}
}

// The Graph values a lookup sends reach the tenant as they were asked:
// quotes, '#', '+', '&', '%' and spaces of the filter survive the encoding.
func TestLookupEncoding(t *testing.T) {
	p := planLookup("mail", []string{"o'brien@x", "a#b+c&d=e%f@x"}, MaxFilterValues)
	got := p.itemURL(0)
	want := "/users?$filter=mail%20in%20%28%27o%27%27brien%40x%27%2C%27a%23b%2Bc%26d%3De%25f%40x%27%29&$select=id,userPrincipalName,mail,displayName"
	if got != want {
		t.Errorf("item URL\n got %s\nwant %s", got, want)
	}
	if got := planLookup("", []string{"ann_f.example#EXT#@x"}, 1).itemURL(0); got != "/users/ann_f.example%23ext%23@x?$select=id,userPrincipalName,mail,displayName" {
		t.Errorf("GET URL %s", got)
	}
}
