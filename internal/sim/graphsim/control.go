package graphsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// routes wires login, Graph and the /_sim control API. Go's ServeMux patterns keep
// the method and the tenant wildcard explicit.
func (s *Server) routes() {
	m := http.NewServeMux()
	// Login (Entra ID v2.0 endpoints).
	m.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.handleOpenIDConfig)
	m.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.handleKeys)
	m.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", s.handleAuthorize)
	m.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", s.handleDeviceCode)
	m.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.handleToken)
	m.HandleFunc("GET /devicelogin", s.handleDeviceLogin)
	// Graph.
	m.HandleFunc("POST /v1.0/$batch", s.handleBatch)
	m.HandleFunc("POST /v1.0/communications/getPresencesByUserId", s.handlePresences)
	m.HandleFunc("GET /v1.0/users/{id}/presence", s.handleUserPresence)
	m.HandleFunc("POST /v1.0/users/{id}/presence/setPresence", s.handleSetPresence)
	m.HandleFunc("POST /v1.0/users/{id}/presence/clearPresence", s.handleClearPresence)
	m.HandleFunc("GET /v1.0/users/{id}", s.handleUser)
	m.HandleFunc("GET /v1.0/users", s.handleUsers)
	m.HandleFunc("GET /v1.0/{object}", s.handleApplication) // applications(appId='...')
	// Control API.
	m.HandleFunc("POST /_sim/presence", s.ctlPresence)
	m.HandleFunc("GET /_sim/changes", s.ctlChanges)
	m.HandleFunc("POST /_sim/stale", s.ctlStale)
	m.HandleFunc("GET /_sim/sessions", s.ctlSessions)
	m.HandleFunc("POST /_sim/approle", s.ctlAppRole)
	m.HandleFunc("POST /_sim/devicecode/approve", s.ctlApprove)
	m.HandleFunc("POST /_sim/revoke", s.ctlRevoke)
	m.HandleFunc("GET /_sim/stats", s.ctlStats)
	m.HandleFunc("POST /_sim/stats/reset", s.ctlResetStats)
	m.HandleFunc("POST /_sim/fault", s.ctlFault)
	m.HandleFunc("GET /_sim/throttle/directory", s.ctlDirectoryThrottle)
	m.HandleFunc("POST /_sim/throttle/directory", s.ctlDirectoryThrottle)
	m.HandleFunc("DELETE /_sim/fault", s.ctlClearFaults)
	m.HandleFunc("GET /_sim/users", s.ctlUsers)
	m.HandleFunc("POST /_sim/step", s.ctlStep)
	s.mux = m
}

type ctlError struct {
	Error string `json:"error"`
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("body is not the expected JSON: %w", err)
	}
	return nil
}

// ctlPresence: POST /_sim/presence {"upn","availability","activity"} -> {"changedAt"}.
func (s *Server) ctlPresence(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UPN          string `json:"upn"`
		Availability string `json:"availability"`
		Activity     string `json:"activity"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	at, err := s.SetPresence(req.UPN, req.Availability, req.Activity)
	switch {
	case errors.Is(err, ErrUnknownUser):
		writeJSON(w, http.StatusNotFound, ctlError{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"changedAt": at})
	}
}

// ctlStale: POST /_sim/stale {"upn"} -> {"sequenceNumber"}: the next presence
// read of the user answers the previous presence with its older sequence
// number (ServeStale).
func (s *Server) ctlStale(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UPN string `json:"upn"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	seq, err := s.ServeStale(req.UPN)
	switch {
	case errors.Is(err, ErrUnknownUser):
		writeJSON(w, http.StatusNotFound, ctlError{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusConflict, ctlError{err.Error()})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"sequenceNumber": seq})
	}
}

// ctlChanges: GET /_sim/changes?since=RFC3339Nano -> {"changes":[...],"now"}.
// Pass the returned now as the next since to follow changes.
func (s *Server) ctlChanges(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, ctlError{fmt.Sprintf("since=%q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05.999Z)", v)})
			return
		}
		since = t
	}
	now := s.clock.Now().UTC()
	writeJSON(w, http.StatusOK, map[string]any{"changes": s.Changes(since), "now": now})
}

// ctlSessions: GET /_sim/sessions?upn=UPN-or-id -> {"availability","activity",
// "sessions":[...]}: what Graph shows for the user and the applications' live
// presence sessions.
func (s *Server) ctlSessions(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("upn")
	sessions, ok := s.Sessions(key)
	if !ok {
		writeJSON(w, http.StatusNotFound, ctlError{fmt.Sprintf("%q: %v", key, ErrUnknownUser)})
		return
	}
	av, ac, _ := s.Presence(key)
	writeJSON(w, http.StatusOK, map[string]any{"availability": av, "activity": ac, "sessions": sessions})
}

// ctlAppRole: POST /_sim/approle {"app","role","granted"} grants or withdraws an
// application permission of an app registration (SetAppRole), e.g.
// {"app":"presencebridge-daemon","role":"Presence.ReadWrite.All","granted":false}.
func (s *Server) ctlAppRole(w http.ResponseWriter, r *http.Request) {
	var req struct {
		App     string `json:"app"`
		Role    string `json:"role"`
		Granted *bool  `json:"granted"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	if req.Granted == nil {
		writeJSON(w, http.StatusBadRequest, ctlError{`"granted" is missing: true grants the role, false withdraws it`})
		return
	}
	err := s.SetAppRole(req.App, req.Role, *req.Granted)
	switch {
	case errors.Is(err, ErrUnknownApp):
		writeJSON(w, http.StatusNotFound, ctlError{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// ctlApprove: POST /_sim/devicecode/approve {"upn"} -> {"approved": n}.
func (s *Server) ctlApprove(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UPN string `json:"upn"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	if req.UPN == "" {
		req.UPN = s.opts.DeviceCodeUPN
	}
	if _, _, ok := s.identity(req.UPN); !ok {
		writeJSON(w, http.StatusNotFound, ctlError{fmt.Sprintf("%q is not a user of the simulated tenant (domains %v)", req.UPN, s.opts.Domains)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"approved": s.ApproveDeviceCodes(req.UPN)})
}

// ctlRevoke: POST /_sim/revoke -> {"revoked": n} revokes the refresh tokens;
// ?sessions=1 also refuses the access tokens issued so far, ?keepRefresh=1 only
// those, ?claims=1 with a claims challenge (RevokeSessions).
func (s *Server) ctlRevoke(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("sessions") != "1" && q.Get("keepRefresh") != "1" {
		writeJSON(w, http.StatusOK, map[string]int{"revoked": s.RevokeRefreshTokens()})
		return
	}
	n := s.RevokeSessions(RevokeOptions{KeepRefreshTokens: q.Get("keepRefresh") == "1", ClaimsChallenge: q.Get("claims") == "1"})
	writeJSON(w, http.StatusOK, map[string]int{"revoked": n})
}

// ctlStats: GET /_sim/stats[?requests=false][&writes=false] -> Stats.
func (s *Server) ctlStats(w http.ResponseWriter, r *http.Request) {
	st := s.Stats()
	if r.URL.Query().Get("requests") == "false" {
		st.Requests = nil
	}
	if r.URL.Query().Get("writes") == "false" {
		st.Writes = nil
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) ctlResetStats(w http.ResponseWriter, r *http.Request) {
	s.ResetStats()
	w.WriteHeader(http.StatusNoContent)
}

// ctlFault: POST /_sim/fault {"path","status","retryAfter","count","delay":"2s"}.
func (s *Server) ctlFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if err := readJSON(w, r, &f); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	if f.Path == "" {
		writeJSON(w, http.StatusBadRequest, ctlError{`fault "path" is empty; give a path suffix such as "/communications/getPresencesByUserId"`})
		return
	}
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		writeJSON(w, http.StatusBadRequest, ctlError{fmt.Sprintf("fault status %d is not an HTTP status", f.Status)})
		return
	}
	s.InjectFault(f)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) ctlClearFaults(w http.ResponseWriter, r *http.Request) {
	s.ClearFaults()
	w.WriteHeader(http.StatusNoContent)
}

// ctlDirectoryThrottle: GET /_sim/throttle/directory -> DirectoryThrottle;
// POST {"limit","wholeBatch"} sets what it gives (SetDirectoryThrottle; a
// field left out stays as it is; limit 0 is the tenant size's default,
// negative turns the throttle off) and answers the setting in force, e.g.
// {"limit":5,"wholeBatch":true} to have the next $batch of lookups refused
// whole.
func (s *Server) ctlDirectoryThrottle(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req struct {
			Limit      *int  `json:"limit"`
			WholeBatch *bool `json:"wholeBatch"`
		}
		if err := readJSON(w, r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
			return
		}
		d := s.DirectoryThrottle()
		if req.Limit != nil {
			d.Limit = *req.Limit
		}
		if req.WholeBatch != nil {
			d.WholeBatch = *req.WholeBatch
		}
		s.SetDirectoryThrottle(d)
	}
	writeJSON(w, http.StatusOK, s.DirectoryThrottle())
}

// ctlUsers: GET /_sim/users -> {"users":[...]}.
func (s *Server) ctlUsers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"users": s.dir.users})
}

// ctlStep: POST /_sim/step {"duration":"1m"} -> {"changes": n}; drives a
// ManualEngine from scripts.
func (s *Server) ctlStep(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Duration string `json:"duration"`
	}
	if err := readJSON(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, ctlError{err.Error()})
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d <= 0 {
		writeJSON(w, http.StatusBadRequest, ctlError{fmt.Sprintf("duration %q is not a positive Go duration such as \"1m\"", req.Duration)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"changes": s.Step(d)})
}
