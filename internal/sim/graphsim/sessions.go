package graphsim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Writing presence: POST /v1.0/users/{id}/presence/setPresence and clearPresence
// (learn.microsoft.com/graph/api/presence-setpresence, presence-clearpresence and
// graph/cloud-communications-manage-presence-state).
//
// The model. Microsoft's page says a user-preferred state (setUserPreferredPresence)
// beats every session and that among sessions DoNotDisturb > Busy > Available >
// Away. The simulator's own state of a user (the pattern engine, SetPresence,
// POST /_sim/presence) stands for the user's Teams client, which is one session
// among others, not a user-preferred override (the simulator has none). So what
// Graph shows for a user (getPresencesByUserId, GET presence, Presence, Changes)
// is the winner among the user's client state and the live application sessions,
// by that precedence (rankOf):
//   - a user Available in Teams with an application's Busy/InACall session shows
//     Busy/InACall; a user in DoNotDisturb stays DoNotDisturb; a user Offline or
//     in an unknown state shows the session;
//   - on equal rank a session wins over the client state (a call's Busy/InACall
//     over the client's Busy/InAMeeting), and the most recently set session over
//     an older one;
//   - when a session is cleared or expires the winner is taken again, so the
//     client state shows again.
//
// Not modelled: the user-preferred state, an Available session decaying to
// AvailableInactive after 5 minutes and Away after 10, and the few minutes a real
// Teams client takes to show a change.

// Permissions of the write calls (presence-setpresence, "Permissions").
const (
	// RolePresenceWrite is the application permission that lets an application
	// token set and clear anyone's presence.
	RolePresenceWrite = "Presence.ReadWrite.All"
	// ScopePresenceWrite is the delegated permission that lets a signed-in user
	// set and clear their own presence only.
	ScopePresenceWrite = "Presence.ReadWrite"
)

// expirationDuration's bounds and default (presence-setpresence, "Request body").
const (
	MinSessionExpiration     = 5 * time.Minute
	MaxSessionExpiration     = 4 * time.Hour
	DefaultSessionExpiration = MinSessionExpiration
)

// Write operations, as WriteRecord.Op names them.
const (
	OpSetPresence   = "setPresence"
	OpClearPresence = "clearPresence"
)

// allowedPairs are the availability/activity pairs setPresence accepts, by their
// lower-case form (values are matched ignoring case and kept canonical). It
// cannot set OutOfOffice or InAMeeting, for instance.
var allowedPairs = func() map[[2]string][2]string {
	m := map[[2]string][2]string{}
	for _, p := range [][2]string{
		{"Available", "Available"},
		{"Busy", "InACall"},
		{"Busy", "InAConferenceCall"},
		{"Away", "Away"},
		{"DoNotDisturb", "Presenting"},
	} {
		m[[2]string{strings.ToLower(p[0]), strings.ToLower(p[1])}] = p
	}
	return m
}()

const allowedPairsText = "Available/Available, Busy/InACall, Busy/InAConferenceCall, Away/Away or DoNotDisturb/Presenting"

// appSession is one application's presence session for one user. The session
// id is the application's client id, so an application holds at most one session
// per user.
type appSession struct {
	app     string
	pair    uint32
	set     int64 // UnixNano of the last setPresence (creation or renewal)
	expires int64 // UnixNano
}

// Session is a live presence session (Server.Sessions, GET /_sim/sessions).
type Session struct {
	SessionID    string    `json:"sessionId"` // the application (client) id
	Availability string    `json:"availability"`
	Activity     string    `json:"activity"`
	Set          time.Time `json:"set"`     // the last setPresence
	Expires      time.Time `json:"expires"` // unless renewed
}

// rankOf orders availabilities for the aggregation: Microsoft's precedence is
// DoNotDisturb > Busy > Available > Away. The idle forms rank with their state
// (BusyIdle is still busy), BeRightBack with Away, and Offline, PresenceUnknown
// or a value the simulator does not know lowest, so any session shows over them.
func rankOf(availability string) int {
	switch strings.ToLower(availability) {
	case "donotdisturb":
		return 4
	case "busy", "busyidle":
		return 3
	case "available", "availableidle":
		return 2
	case "away", "berightback":
		return 1
	}
	return 0
}

// aggregate is the pair user u shows: the winner among the client state and the
// live sessions (see the model above); changeMu held.
func (d *directory) aggregate(u int32) uint32 {
	best := d.client[u]
	bestRank := d.pairs.get(best).rank
	for _, s := range d.sessions[u] { // oldest set first
		if r := d.pairs.get(s.pair).rank; r >= bestRank {
			best, bestRank = s.pair, r
		}
	}
	return best
}

// lastChangeAt is the time of the newest recorded change; changeMu held.
func (d *directory) lastChangeAt() int64 {
	if n := len(d.changes); n > 0 {
		return d.changes[n-1].at
	}
	return math.MinInt64
}

// expireLocked ends the sessions whose expiry is at or before now, in the order
// they expired, and records what that changes for their users, stamped with the
// expiry time (never before the newest change recorded, so the record stays in
// order); changeMu held. Every write of presence and every read that shows it
// calls this first (through expireSessions for reads), so no goroutine is needed
// and a fake clock moves expiry exactly.
func (d *directory) expireLocked(now int64) {
	if now < d.nextExpiry.Load() {
		return
	}
	type due struct {
		u   int32
		app string
		at  int64
	}
	var ended []due
	for u, ss := range d.sessions {
		for _, s := range ss {
			if s.expires <= now {
				ended = append(ended, due{u, s.app, s.expires})
			}
		}
	}
	slices.SortFunc(ended, func(a, b due) int {
		if a.at != b.at {
			return cmpInt64(a.at, b.at)
		}
		if a.u != b.u {
			return int(a.u - b.u)
		}
		return strings.Compare(a.app, b.app)
	})
	for _, e := range ended {
		d.removeSession(e.u, e.app)
		d.show(e.u, d.aggregate(e.u), max(e.at, d.lastChangeAt()))
	}
	d.resetNextExpiry()
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// resetNextExpiry recomputes the earliest expiry; changeMu held.
func (d *directory) resetNextExpiry() {
	next := int64(math.MaxInt64)
	for _, ss := range d.sessions {
		for _, s := range ss {
			next = min(next, s.expires)
		}
	}
	d.nextExpiry.Store(next)
}

// findSession returns app's session of user u, or nil; changeMu held.
func (d *directory) findSession(u int32, app string) *appSession {
	for _, s := range d.sessions[u] {
		if s.app == app {
			return s
		}
	}
	return nil
}

// removeSession ends app's session of user u and reports whether there was one;
// changeMu held. The caller shows the new aggregate and resets nextExpiry.
func (d *directory) removeSession(u int32, app string) bool {
	ss := d.sessions[u]
	i := slices.IndexFunc(ss, func(s *appSession) bool { return s.app == app })
	if i < 0 {
		return false
	}
	ss = slices.Delete(ss, i, i+1)
	if len(ss) == 0 {
		delete(d.sessions, u)
	} else {
		d.sessions[u] = ss
	}
	return true
}

// setSession creates or renews app's session of user u (a renewal moves it to
// the end: the most recently set); changeMu held.
func (d *directory) setSession(u int32, app string, p uint32, at, expires int64) {
	d.removeSession(u, app)
	d.sessions[u] = append(d.sessions[u], &appSession{app: app, pair: p, set: at, expires: expires})
	d.resetNextExpiry()
}

// expireSessions ends the sessions that expired by now on the tenant's clock. It
// costs one atomic load while none is due, so the read paths call it freely.
func (s *Server) expireSessions() {
	now := s.clock.Now().UnixNano()
	if now < s.dir.nextExpiry.Load() {
		return
	}
	s.dir.changeMu.Lock()
	s.dir.expireLocked(s.clock.Now().UnixNano())
	s.dir.changeMu.Unlock()
}

// Sessions lists the live presence sessions of a user (UPN or object id), the
// most recently set last; ok is false for a user not in the directory.
func (s *Server) Sessions(upn string) (sessions []Session, ok bool) {
	u, ok := s.dir.lookup(upn)
	if !ok {
		return nil, false
	}
	s.dir.changeMu.Lock()
	defer s.dir.changeMu.Unlock()
	s.dir.expireLocked(s.clock.Now().UnixNano())
	sessions = []Session{}
	for _, ss := range s.dir.sessions[u] {
		p := s.dir.pairs.get(ss.pair)
		sessions = append(sessions, Session{SessionID: ss.app, Availability: p.availability, Activity: p.activity,
			Set: time.Unix(0, ss.set).UTC(), Expires: time.Unix(0, ss.expires).UTC()})
	}
	return sessions, true
}

// parseISODuration reads an ISO 8601 duration of days, hours, minutes and
// seconds, as Graph's Edm.Duration is written: "PT5M", "PT1H30M", "PT300S",
// "P1DT2H", "PT0.5S". Years, months and weeks are refused (their length varies).
func parseISODuration(v string) (time.Duration, bool) {
	rest, ok := strings.CutPrefix(v, "P")
	if !ok || rest == "" {
		return 0, false
	}
	var total time.Duration
	inTime, seen := false, false
	order := "D" // the units allowed next, in order
	for rest != "" {
		if rest[0] == 'T' {
			if inTime || len(rest) == 1 {
				return 0, false
			}
			inTime, order, rest = true, "HMS", rest[1:]
			continue
		}
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, false
		}
		unit := rest[i]
		k := strings.IndexByte(order, unit)
		if k < 0 || (unit == 'D') == inTime {
			return 0, false
		}
		order = order[k+1:]
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || (unit != 'S' && strings.Contains(rest[:i], ".")) {
			return 0, false
		}
		var per time.Duration
		switch unit {
		case 'D':
			per = 24 * time.Hour
		case 'H':
			per = time.Hour
		case 'M':
			per = time.Minute
		case 'S':
			per = time.Second
		}
		if n > float64(100*365*24*time.Hour/per) {
			return 0, false
		}
		total += time.Duration(n * float64(per))
		seen = true
		rest = rest[i+1:]
	}
	return total, seen
}

// presenceWriteBody is the body of setPresence and clearPresence; pointers tell
// an absent field from an empty one.
type presenceWriteBody struct {
	SessionID          *string `json:"sessionId"`
	Availability       *string `json:"availability"`
	Activity           *string `json:"activity"`
	ExpirationDuration *string `json:"expirationDuration"`
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// handleSetPresence serves POST /v1.0/users/{id}/presence/setPresence.
func (s *Server) handleSetPresence(w http.ResponseWriter, r *http.Request) {
	s.handlePresenceWrite(w, r, OpSetPresence)
}

// handleClearPresence serves POST /v1.0/users/{id}/presence/clearPresence.
func (s *Server) handleClearPresence(w http.ResponseWriter, r *http.Request) {
	s.handlePresenceWrite(w, r, OpClearPresence)
}

// handlePresenceWrite answers a write and records it (WriteRecord). The body is
// read before the token is checked, so a refused or throttled write is recorded
// with what it asked for. Writes go through authorize like reads: they count in
// the application's one Graph throttle window, and a throttled write gets 429
// with Retry-After.
func (s *Server) handlePresenceWrite(w http.ResponseWriter, r *http.Request, op string) {
	rec := WriteRecord{At: s.clock.Now(), Op: op, User: r.PathValue("id")}
	var body presenceWriteBody
	raw, bodyErr := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if bodyErr == nil {
		bodyErr = json.Unmarshal(raw, &body)
	}
	if bodyErr == nil {
		rec.SessionID, rec.ExpirationDuration = deref(body.SessionID), deref(body.ExpirationDuration)
		rec.Availability, rec.Activity = deref(body.Availability), deref(body.Activity)
	}
	infoOf(r).ids = 1
	sw := &statusWriter{ResponseWriter: w}
	c, ok := s.authorize(sw, r)
	if !ok {
		// authorize answers 401 InvalidAuthenticationToken or 429 TooManyRequests.
		rec.App, rec.Status, rec.RetryAfter = infoOf(r).app, sw.status, sw.Header().Get("Retry-After")
		rec.Error = "InvalidAuthenticationToken"
		if sw.status == http.StatusTooManyRequests {
			rec.Error = "TooManyRequests"
		}
		s.stats.addWrite(rec)
		return
	}
	rec.App = c.AppID
	status, code, msg := s.presenceWrite(c, op, &rec, body, bodyErr)
	rec.Status, rec.Error = status, code
	if status == http.StatusOK {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
	} else {
		writeGraphError(w, status, code, msg)
	}
	s.stats.addWrite(rec)
	if status == http.StatusOK {
		s.log.Debug("Presence written", "op", op, "user", rec.User, "client_id", rec.App,
			"availability", rec.Availability, "activity", rec.Activity, "expires", rec.Expires)
	}
}

// presenceWrite checks and applies one write for token c and says how to answer:
// the permission (403), the user (404), the body (400), then the session.
func (s *Server) presenceWrite(c *tokenClaims, op string, rec *WriteRecord, body presenceWriteBody, bodyErr error) (status int, code, msg string) {
	const forbidden = "Forbidden"
	app := c.Idtyp == "app"
	switch {
	case app && !slices.Contains(c.Roles, RolePresenceWrite):
		return http.StatusForbidden, forbidden, fmt.Sprintf("Insufficient privileges to complete the operation: "+
			"the application token of %q lacks the application permission %s.", c.AppID, RolePresenceWrite)
	case !app && !slices.Contains(strings.Fields(c.Scp), ScopePresenceWrite):
		return http.StatusForbidden, forbidden, fmt.Sprintf("Insufficient privileges to complete the operation: "+
			"the delegated token lacks the permission %s.", ScopePresenceWrite)
	}
	u, found := s.dir.lookup(rec.User)
	if !found {
		return http.StatusNotFound, "Request_ResourceNotFound",
			fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", rec.User)
	}
	user := s.dir.users[u]
	rec.User, rec.UPN = user.ID, user.UPN
	if !app && !strings.EqualFold(c.Oid, user.ID) {
		return http.StatusForbidden, forbidden, fmt.Sprintf("Insufficient privileges to complete the operation: "+
			"a delegated token (%s) may set the presence of the signed-in user only; "+
			"another user's presence needs the application permission %s.", ScopePresenceWrite, RolePresenceWrite)
	}
	if bodyErr != nil {
		return http.StatusBadRequest, "BadRequest", "Invalid request body: " + bodyErr.Error()
	}
	switch sid := deref(body.SessionID); {
	case sid == "":
		return http.StatusBadRequest, "BadRequest", "The sessionId is missing; it must be the application (client) id of the caller."
	case !strings.EqualFold(sid, c.AppID):
		return http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("The sessionId %q is not the application (client) id of the caller, %q.", sid, c.AppID)
	}

	if op == OpClearPresence {
		s.dir.changeMu.Lock()
		defer s.dir.changeMu.Unlock()
		now := s.clock.Now()
		s.dir.expireLocked(now.UnixNano())
		rec.At = now
		if !s.dir.removeSession(u, c.AppID) {
			return http.StatusNotFound, "NotFound", fmt.Sprintf("The presence session %q of user %s does not exist "+
				"(never set, already cleared or expired).", c.AppID, user.ID)
		}
		s.dir.resetNextExpiry()
		s.dir.show(u, s.dir.aggregate(u), now.UnixNano())
		return http.StatusOK, "", ""
	}

	canon, allowed := allowedPairs[[2]string{strings.ToLower(deref(body.Availability)), strings.ToLower(deref(body.Activity))}]
	if !allowed {
		return http.StatusBadRequest, "BadRequest", fmt.Sprintf("The availability %q with the activity %q is not a "+
			"combination setPresence accepts; it takes %s.", deref(body.Availability), deref(body.Activity), allowedPairsText)
	}
	rec.Availability, rec.Activity = canon[0], canon[1]
	exp := DefaultSessionExpiration
	if v := deref(body.ExpirationDuration); v != "" {
		d, ok := parseISODuration(v)
		if !ok {
			return http.StatusBadRequest, "BadRequest", fmt.Sprintf("The expirationDuration %q is not an ISO 8601 duration such as PT5M or PT1H30M.", v)
		}
		if d < MinSessionExpiration || d > MaxSessionExpiration {
			return http.StatusBadRequest, "BadRequest", fmt.Sprintf("The expirationDuration %q is outside PT5M..PT4H.", v)
		}
		exp = d
	}
	rec.Expiration = exp
	p := s.dir.pairs.intern(canon[0], canon[1])
	s.dir.changeMu.Lock()
	defer s.dir.changeMu.Unlock()
	now := s.clock.Now()
	s.dir.expireLocked(now.UnixNano())
	rec.At, rec.Expires = now, now.Add(exp)
	s.dir.setSession(u, c.AppID, p, now.UnixNano(), now.Add(exp).UnixNano())
	s.dir.show(u, s.dir.aggregate(u), now.UnixNano())
	return http.StatusOK, "", ""
}
