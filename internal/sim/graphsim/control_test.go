package graphsim_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

func TestControlAPI(t *testing.T) {
	s, fc := startFake(t, graphsim.Options{Users: 4, ChangesPerUserPerHour: 60})
	u := s.Users()

	t.Run("users", func(t *testing.T) {
		r := do(t, s, http.MethodGet, "/_sim/users", "", nil)
		var got struct{ Users []graphsim.User }
		r.json(t, &got)
		if r.Status != 200 || len(got.Users) != 4 || got.Users[3] != u[3] {
			t.Errorf("%d %+v", r.Status, got)
		}
	})

	t.Run("presence and changes", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/_sim/presence", "", map[string]string{"upn": u[0].UPN, "availability": "Busy", "activity": "InAConferenceCall"})
		var set struct{ ChangedAt time.Time }
		r.json(t, &set)
		if r.Status != 200 || !set.ChangedAt.Equal(t0) {
			t.Fatalf("%d %s, want changedAt %v", r.Status, r.Body, t0)
		}
		if av, ac, _ := s.Presence(u[0].UPN); av != "Busy" || ac != "InAConferenceCall" {
			t.Errorf("presence after control call: %s/%s", av, ac)
		}
		fc.Advance(time.Second)
		do(t, s, http.MethodPost, "/_sim/presence", "", map[string]string{"upn": u[1].UPN, "availability": "Away", "activity": "Away-ish"})

		r = do(t, s, http.MethodGet, "/_sim/changes?since="+url.QueryEscape(t0.Format(time.RFC3339Nano)), "", nil)
		var ch struct {
			Changes []graphsim.Change
			Now     time.Time
		}
		r.json(t, &ch)
		if r.Status != 200 || len(ch.Changes) != 1 || ch.Changes[0].UPN != u[1].UPN || !ch.Now.Equal(t0.Add(time.Second)) {
			t.Errorf("changes since t0: %d %s", r.Status, r.Body)
		}
		r = do(t, s, http.MethodGet, "/_sim/changes", "", nil)
		r.json(t, &ch)
		if len(ch.Changes) != 2 {
			t.Errorf("all changes: %s", r.Body)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		tests := []struct {
			method, path string
			body         any
			want         int
		}{
			{http.MethodPost, "/_sim/presence", map[string]string{"upn": "nobody@contoso.example", "availability": "Busy", "activity": "Busy"}, 404},
			{http.MethodPost, "/_sim/presence", map[string]string{"upn": u[0].UPN}, 400},
			{http.MethodPost, "/_sim/presence", "{", 400},
			{http.MethodGet, "/_sim/changes?since=yesterday", nil, 400},
			{http.MethodPost, "/_sim/devicecode/approve", map[string]string{"upn": "x@elsewhere.example"}, 404},
			{http.MethodPost, "/_sim/fault", map[string]any{"status": 500}, 400},
			{http.MethodPost, "/_sim/fault", map[string]any{"path": "/x", "delay": "soon"}, 400},
			{http.MethodPost, "/_sim/fault", map[string]any{"path": "/x", "status": 1000}, 400},
			{http.MethodPost, "/_sim/step", map[string]string{"duration": "-1s"}, 400},
			{http.MethodGet, "/_sim/presence", nil, 405},
		}
		for _, tt := range tests {
			if r := do(t, s, tt.method, tt.path, "", tt.body); r.Status != tt.want {
				t.Errorf("%s %s %v: %d %s, want %d", tt.method, tt.path, tt.body, r.Status, r.Body, tt.want)
			}
		}
	})

	t.Run("step", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/_sim/step", "", map[string]string{"duration": "1m"})
		var got struct{ Changes int }
		r.json(t, &got)
		if r.Status != 200 || got.Changes != 4 {
			t.Errorf("%d %s, want 4 changes (4 users × 60/h × 1 min)", r.Status, r.Body)
		}
	})

	t.Run("device code approve and revoke", func(t *testing.T) {
		_, dc := deviceCode(t, s, graphsim.DefaultPublicApp)
		r := do(t, s, http.MethodPost, "/_sim/devicecode/approve", "", map[string]string{"upn": u[2].UPN})
		var ap struct{ Approved int }
		r.json(t, &ap)
		if r.Status != 200 || ap.Approved != 1 {
			t.Fatalf("approve: %d %s", r.Status, r.Body)
		}
		st, o := token(t, s, deviceForm(dc["device_code"].(string)))
		if st != 200 {
			t.Fatalf("token after control approval: %d %+v", st, o)
		}
		r = do(t, s, http.MethodPost, "/_sim/revoke", "", nil)
		var rv struct{ Revoked int }
		r.json(t, &rv)
		if r.Status != 200 || rv.Revoked != 1 {
			t.Errorf("revoke: %d %s", r.Status, r.Body)
		}
		if st, o := token(t, s, refreshForm(graphsim.DefaultPublicApp, o.RefreshToken)); st != 400 || o.Error != "invalid_grant" {
			t.Errorf("refresh after /_sim/revoke: %d %+v", st, o)
		}
	})

	t.Run("fault and stats", func(t *testing.T) {
		r := do(t, s, http.MethodPost, "/_sim/stats/reset", "", nil)
		if r.Status != http.StatusNoContent {
			t.Fatalf("reset: %d", r.Status)
		}
		r = do(t, s, http.MethodPost, "/_sim/fault", "", map[string]any{"path": "/presence", "status": 504, "count": 1, "retryAfter": "3"})
		if r.Status != http.StatusNoContent {
			t.Fatalf("fault: %d %s", r.Status, r.Body)
		}
		tok := appToken(t, s)
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+u[0].ID+"/presence", tok, nil); r.Status != 504 || r.Header.Get("Retry-After") != "3" {
			t.Errorf("scripted 504: %d %q", r.Status, r.Header.Get("Retry-After"))
		}
		do(t, s, http.MethodGet, "/v1.0/users/"+u[0].ID+"/presence", tok, nil)

		r = do(t, s, http.MethodPost, "/_sim/fault", "", map[string]any{"path": "/presence", "status": 500, "count": -1})
		if r.Status != http.StatusNoContent {
			t.Fatalf("fault: %d", r.Status)
		}
		if r := do(t, s, http.MethodDelete, "/_sim/fault", "", nil); r.Status != http.StatusNoContent {
			t.Fatalf("clear faults: %d", r.Status)
		}
		if r := do(t, s, http.MethodGet, "/v1.0/users/"+u[0].ID+"/presence", tok, nil); r.Status != 200 {
			t.Errorf("after DELETE /_sim/fault: %d", r.Status)
		}

		r = do(t, s, http.MethodGet, "/_sim/stats", "", nil)
		var st graphsim.Stats
		r.json(t, &st)
		if r.Status != 200 || len(st.Requests) != 3 || st.Requests[0].Status != 504 || st.Requests[1].Status != 200 ||
			st.Endpoints["GET /v1.0/users/{id}/presence"] != 3 || st.MaxInWindow[graphsim.DefaultDaemonApp] != 2 {
			t.Errorf("stats: %s", r.Body)
		}
		r = do(t, s, http.MethodGet, "/_sim/stats?requests=false", "", nil)
		var brief graphsim.Stats
		r.json(t, &brief)
		if len(brief.Requests) != 0 || brief.Endpoints["GET /v1.0/users/{id}/presence"] != 3 {
			t.Errorf("stats?requests=false listed requests")
		}
	})
}
