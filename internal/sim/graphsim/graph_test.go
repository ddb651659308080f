package graphsim_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

func TestGraphRequiresToken(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2})
	id := s.Users()[0].ID
	good := appToken(t, s)
	tampered := good[:len(good)-4] + "AAAA"
	other, _ := startFake(t, graphsim.Options{Users: 1})
	foreign := appToken(t, other)

	tests := []struct {
		name, token string
	}{
		{"no token", ""},
		{"not a JWT", "abc"},
		{"bad signature", tampered},
		{"another tenant's token", foreign},
	}
	for _, tt := range tests {
		for _, call := range []struct{ method, path string }{
			{http.MethodPost, "/v1.0/communications/getPresencesByUserId"},
			{http.MethodPost, "/v1.0/$batch"},
			{http.MethodGet, "/v1.0/users/" + id + "/presence"},
		} {
			r := do(t, s, call.method, call.path, tt.token, presenceBody(id))
			if r.Status != http.StatusUnauthorized || r.graphErrorCode(t) != "InvalidAuthenticationToken" {
				t.Errorf("%s, %s %s: %d %s, want 401 InvalidAuthenticationToken", tt.name, call.method, call.path, r.Status, r.Body)
			}
		}
	}
	if r := do(t, s, http.MethodGet, "/v1.0/users/"+id+"/presence", good, nil); r.Status != http.StatusOK {
		t.Fatalf("valid token: %d %s", r.Status, r.Body)
	}
	fc.Advance(time.Hour)
	r := do(t, s, http.MethodGet, "/v1.0/users/"+id+"/presence", good, nil)
	if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), "expired") {
		t.Errorf("token past its lifetime on the injected clock: %d %s, want 401 expired", r.Status, r.Body)
	}
}

func TestGetPresencesByUserId(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 700})
	tok := appToken(t, s)
	users := s.Users()
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = users[i].ID
		}
		return out
	}
	if _, err := s.SetPresence(users[0].UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPresence(users[1].UPN, "Offline", "OutOfOffice"); err != nil {
		t.Fatal(err)
	}

	t.Run("650 ids", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(ids(650)...))
		if r.Status != http.StatusOK {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		var p presenceReply
		r.json(t, &p)
		if len(p.Value) != 650 {
			t.Fatalf("%d presences, want 650", len(p.Value))
		}
		for i, v := range p.Value {
			av, ac, _ := s.Presence(users[i].UPN)
			if v.ID != users[i].ID || v.Availability != av || v.Activity != ac || v.OutOfOfficeSettings == nil {
				t.Fatalf("value[%d] = %+v, want id %s %s/%s with outOfOfficeSettings", i, v, users[i].ID, av, ac)
			}
		}
		if p.Value[0].Availability != "Busy" || p.Value[0].Activity != "InACall" || p.Value[0].OutOfOfficeSettings.IsOutOfOffice {
			t.Errorf("value[0] = %+v, want Busy/InACall", p.Value[0])
		}
		if !p.Value[1].OutOfOfficeSettings.IsOutOfOffice {
			t.Errorf("value[1] = %+v, want isOutOfOffice", p.Value[1])
		}
	})
	t.Run("651 ids", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(ids(651)...))
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "650") {
			t.Errorf("%d %s, want 400 naming the 650 limit", r.Status, r.Body)
		}
	})
	t.Run("unknown ids omitted", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok,
			presenceBody("00000000-0000-0000-0000-000000000000", users[5].ID, "nonsense"))
		var p presenceReply
		r.json(t, &p)
		if r.Status != http.StatusOK || len(p.Value) != 1 || p.Value[0].ID != users[5].ID {
			t.Errorf("%d %+v, want only %s", r.Status, p, users[5].ID)
		}
	})
	t.Run("body shapes", func(t *testing.T) {
		tests := []struct {
			name, body string
			want       int // presences, -1 = 400
		}{
			{"compact", `{"ids":["` + users[0].ID + `","` + users[1].ID + `"]}`, 2},
			{"spaced", "{ \"ids\" : [\n \"" + users[0].ID + "\" ,\t\"" + users[1].ID + "\" ] }\n", 2},
			{"escaped", `{"ids":["` + users[0].ID + `","` + fmt.Sprintf(`\u%04x`, users[1].ID[0]) + users[1].ID[1:] + `"]}`, 2},
			{"extra key", `{"x":1,"ids":["` + users[0].ID + `"]}`, 1},
			{"upper case id", `{"ids":["` + strings.ToUpper(users[2].ID) + `"]}`, 1},
			{"empty", `{"ids":[]}`, -1},
			{"not JSON", `ids=1`, -1},
		}
		for _, tt := range tests {
			r := do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, tt.body)
			if tt.want < 0 {
				if r.Status != http.StatusBadRequest || r.graphErrorCode(t) != "BadRequest" {
					t.Errorf("%s: %d %s, want 400 BadRequest", tt.name, r.Status, r.Body)
				}
				continue
			}
			var p presenceReply
			r.json(t, &p)
			if r.Status != http.StatusOK || len(p.Value) != tt.want {
				t.Errorf("%s: %d, %d presences, want %d", tt.name, r.Status, len(p.Value), tt.want)
			}
		}
	})
	st := s.Stats()
	if st.Endpoints["POST /v1.0/communications/getPresencesByUserId"] < 4 || st.PresenceIDs < 653 {
		t.Errorf("stats %+v: want the presence calls counted", st.Endpoints)
	}
}

func TestUserPresence(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 3})
	tok := appToken(t, s)
	u := s.Users()[2]
	if _, err := s.SetPresence(u.UPN, "DoNotDisturb", "Presenting"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{u.ID, u.UPN} {
		r := do(t, s, http.MethodGet, "/v1.0/users/"+key+"/presence", tok, nil)
		var p struct {
			ID, Availability, Activity string
		}
		r.json(t, &p)
		if r.Status != http.StatusOK || p.ID != u.ID || p.Availability != "DoNotDisturb" || p.Activity != "Presenting" {
			t.Errorf("%s: %d %s", key, r.Status, r.Body)
		}
	}
	r := do(t, s, http.MethodGet, "/v1.0/users/nobody@contoso.example/presence", tok, nil)
	if r.Status != http.StatusNotFound || r.graphErrorCode(t) != "Request_ResourceNotFound" {
		t.Errorf("unknown user: %d %s", r.Status, r.Body)
	}
}

type batchReply struct {
	Responses []struct {
		ID     string         `json:"id"`
		Status int            `json:"status"`
		Body   map[string]any `json:"body"`
	} `json:"responses"`
}

func batch(n int, url func(i int) string) map[string]any {
	reqs := make([]map[string]string, n)
	for i := range reqs {
		reqs[i] = map[string]string{"id": strconv.Itoa(i + 1), "method": "GET", "url": url(i)}
	}
	return map[string]any{"requests": reqs}
}

func TestBatchUserLookup(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 30, Domains: []string{"contoso.example", "fabrikam.example"}})
	tok := appToken(t, s)
	users := s.Users()

	t.Run("20 lookups", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batch(20, func(i int) string {
			switch i {
			case 0:
				return "/users/nobody@contoso.example?$select=id,userPrincipalName,mail"
			case 1:
				return "users/" + strings.ToUpper(users[1].UPN) // case-insensitive, no leading slash
			case 2:
				return "/users/" + users[2].ID
			}
			return "/users/" + strings.Replace(users[i].UPN, "@", "%40", 1) + "?$select=id,userPrincipalName,mail"
		}))
		if r.Status != http.StatusOK {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
		var b batchReply
		r.json(t, &b)
		if len(b.Responses) != 20 {
			t.Fatalf("%d responses, want 20", len(b.Responses))
		}
		for i, resp := range b.Responses {
			if i == 0 {
				errBody, _ := resp.Body["error"].(map[string]any)
				if resp.Status != http.StatusNotFound || errBody["code"] != "Request_ResourceNotFound" {
					t.Errorf("unknown UPN: %+v, want 404 Request_ResourceNotFound", resp)
				}
				continue
			}
			if resp.ID != strconv.Itoa(i+1) || resp.Status != 200 || resp.Body["id"] != users[i].ID || resp.Body["userPrincipalName"] != users[i].UPN || resp.Body["mail"] != users[i].Mail {
				t.Errorf("response %d: %+v, want %+v", i, resp, users[i])
			}
			_, hasName := resp.Body["displayName"]
			if wantName := i < 3; hasName != wantName {
				t.Errorf("response %d: displayName present %v, want %v ($select honoured)", i, hasName, wantName)
			}
		}
	})
	t.Run("21 requests", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batch(21, func(i int) string { return "/users/" + users[i].UPN }))
		if r.Status != http.StatusBadRequest || r.graphErrorCode(t) != "BadRequest" || !strings.Contains(string(r.Body), "20") {
			t.Errorf("%d %s, want 400 naming the limit of 20", r.Status, r.Body)
		}
	})
	t.Run("presence inside a batch", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, batch(1, func(int) string { return "/users/" + users[4].ID + "/presence" }))
		var b batchReply
		r.json(t, &b)
		av, _, _ := s.Presence(users[4].UPN)
		if r.Status != 200 || len(b.Responses) != 1 || b.Responses[0].Body["availability"] != av {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	t.Run("duplicate ids", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/v1.0/$batch", tok, map[string]any{"requests": []map[string]string{
			{"id": "1", "method": "GET", "url": "/users/" + users[0].ID}, {"id": "1", "method": "GET", "url": "/users/" + users[1].ID}}})
		if r.Status != http.StatusBadRequest {
			t.Errorf("%d %s, want 400", r.Status, r.Body)
		}
	})
	// Each request of a $batch counts on its own: the 20 lookups 1 resource
	// unit each in the directory throttle, the presence read once in the
	// presence throttle; the refused batches and the $batch itself nowhere.
	st := s.Stats()
	if got := st.MaxInWindow[graphsim.DefaultDaemonApp]; got != 1 {
		t.Errorf("MaxInWindow = %d, want 1 (the presence read)", got)
	}
	if got := st.MaxDirectoryRU[graphsim.DefaultDaemonApp]; got != 20 {
		t.Errorf("MaxDirectoryRU = %d, want 20 (the 20 lookups)", got)
	}
}

func TestThrottle(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 2, ThrottleLimit: 5, ThrottleWindow: 30 * time.Second})
	tok := appToken(t, s)
	id := s.Users()[0].ID
	call := func() reply {
		return do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(id))
	}
	for i := range 5 {
		if r := call(); r.Status != http.StatusOK {
			t.Fatalf("request %d within the limit: %d", i+1, r.Status)
		}
		fc.Advance(time.Second) // admitted at t0, t0+1s, ..., t0+4s
	}
	tests := []struct {
		advance        time.Duration
		wantStatus     int
		wantRetryAfter string
	}{
		{0, http.StatusTooManyRequests, "25"},              // now t0+5s: the t0 slot frees at t0+30s
		{10*time.Second + 500*time.Millisecond, 429, "15"}, // t0+15.5s: 14.5 s, rounded up
		{14*time.Second + 499*time.Millisecond, 429, "1"},  // t0+29.999s: at least 1
		{time.Millisecond, http.StatusOK, ""},              // t0+30s: the first slot is free
		{0, http.StatusTooManyRequests, "1"},               // full again; next frees at t0+31s
		{time.Second, http.StatusOK, ""},                   // t0+31s
		{0, http.StatusTooManyRequests, "1"},               //
		{time.Minute, http.StatusOK, ""},                   // window empty
	}
	for i, tt := range tests {
		fc.Advance(tt.advance)
		r := call()
		if r.Status != tt.wantStatus || r.Header.Get("Retry-After") != tt.wantRetryAfter {
			t.Fatalf("step %d: %d Retry-After %q, want %d %q", i, r.Status, r.Header.Get("Retry-After"), tt.wantStatus, tt.wantRetryAfter)
		}
		if r.Status == http.StatusTooManyRequests && r.graphErrorCode(t) != "TooManyRequests" {
			t.Errorf("step %d: body %s, want code TooManyRequests", i, r.Body)
		}
	}
	for range 5 {
		call()
	}
	st := s.Stats()
	if st.Throttled < 4 {
		t.Errorf("Stats.Throttled = %d, want at least 4", st.Throttled)
	}
	if st.MaxInWindow[graphsim.DefaultDaemonApp] != 5 {
		t.Errorf("MaxInWindow = %v, want 5 for %s", st.MaxInWindow, graphsim.DefaultDaemonApp)
	}
	// Another app has its own budget.
	s2, _ := startFake(t, graphsim.Options{Users: 1, ThrottleLimit: 1, Apps: []graphsim.App{{ClientID: "a", Secret: "s"}, {ClientID: "b", Secret: "s"}}})
	ta, _ := s2.AppToken("a")
	tb, _ := s2.AppToken("b")
	id2 := s2.Users()[0].ID
	if r := do(t, s2, http.MethodGet, "/v1.0/users/"+id2+"/presence", ta, nil); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := do(t, s2, http.MethodGet, "/v1.0/users/"+id2+"/presence", ta, nil); r.Status != 429 {
		t.Errorf("app a over its limit: %d, want 429", r.Status)
	}
	if r := do(t, s2, http.MethodGet, "/v1.0/users/"+id2+"/presence", tb, nil); r.Status != 200 {
		t.Errorf("app b, own budget: %d, want 200", r.Status)
	}
}

func TestThrottleOff(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 1, ThrottleLimit: -1})
	tok := appToken(t, s)
	for i := range 50 {
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+s.Users()[0].ID+"/presence", tok, nil); r.Status != 200 {
			t.Fatalf("request %d: %d", i, r.Status)
		}
	}
	if got := s.Stats().MaxInWindow[graphsim.DefaultDaemonApp]; got != 50 {
		t.Errorf("MaxInWindow with the throttle off = %d, want 50 (still counted)", got)
	}
}

func TestInjectFault(t *testing.T) {
	s, _ := startFake(t, graphsim.Options{Users: 2})
	tok := appToken(t, s)
	id := s.Users()[0].ID
	presences := func() reply {
		return do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(id))
	}
	s.InjectFault(graphsim.Fault{Path: "/communications/getPresencesByUserId", Status: 429, RetryAfter: "7", Count: 2})
	s.InjectFault(graphsim.Fault{Path: "/presence", Status: 503}) // Count 0: once
	for i := range 2 {
		r := presences()
		if r.Status != 429 || r.Header.Get("Retry-After") != "7" || r.graphErrorCode(t) != "TooManyRequests" {
			t.Fatalf("faulted request %d: %d %q %s", i, r.Status, r.Header.Get("Retry-After"), r.Body)
		}
	}
	if r := presences(); r.Status != 200 {
		t.Errorf("after Count faults: %d, want 200", r.Status)
	}
	for i, want := range []int{503, 200} {
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+id+"/presence", tok, nil); r.Status != want {
			t.Errorf("presence call %d: %d, want %d", i, r.Status, want)
		}
	}

	s.InjectFault(graphsim.Fault{Path: "/oauth2/v2.0/token", Status: 500, Count: -1})
	for range 3 {
		st, o := token(t, s, map[string][]string{"grant_type": {"client_credentials"}})
		if st != 500 || o.Error == "" {
			t.Fatalf("persistent login fault: %d %+v, want 500 with an OAuth error body", st, o)
		}
	}
	s.ClearFaults()
	if st, _ := token(t, s, map[string][]string{"grant_type": {"client_credentials"}}); st == 500 {
		t.Error("fault survived ClearFaults")
	}

	// A delay-only fault slows the request down but serves it normally.
	s.InjectFault(graphsim.Fault{Path: "getPresencesByUserId", Delay: 5 * time.Millisecond})
	if r := presences(); r.Status != 200 {
		t.Errorf("delay-only fault: %d, want 200", r.Status)
	}
	if got := s.Stats().Throttled; got != 2 {
		t.Errorf("Stats.Throttled = %d, want the 2 scripted 429s", got)
	}
}

func TestStatsRecordsRequests(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 10})
	tok := appToken(t, s)
	ids := []string{s.Users()[0].ID, s.Users()[1].ID, s.Users()[2].ID}
	fc.Advance(time.Second)
	do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", tok, presenceBody(ids...))
	do(t, s, http.MethodPost, "/v1.0/communications/getPresencesByUserId", "", presenceBody(ids...))
	st := s.Stats()
	if len(st.Requests) != 2 {
		t.Fatalf("Requests = %+v, want 2", st.Requests)
	}
	want := graphsim.RequestRecord{At: t0.Add(time.Second), App: graphsim.DefaultDaemonApp, Path: "/v1.0/communications/getPresencesByUserId", IDs: 3, Status: 200}
	if got := st.Requests[0]; !got.At.Equal(want.At) || got.App != want.App || got.Path != want.Path || got.IDs != want.IDs || got.Status != want.Status {
		t.Errorf("Requests[0] = %+v, want %+v", got, want)
	}
	if st.Requests[1].Status != 401 {
		t.Errorf("Requests[1] = %+v, want the 401", st.Requests[1])
	}
	s.ResetStats()
	st = s.Stats()
	if len(st.Requests) != 0 || len(st.Endpoints) != 0 || st.MaxInWindow[graphsim.DefaultDaemonApp] != 1 {
		t.Errorf("after ResetStats: %+v", st)
	}
}
