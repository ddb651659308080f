package graphsim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Directory reads: GET /v1.0/users/{id | userPrincipalName} and the filtered
// list GET /v1.0/users?$filter=..., at top level and inside a $batch, with the
// directory's own throttle (identity and access: resource units per 10 s per
// application and tenant), apart from presence's.

// MaxFilterValues: a $filter takes at most 15 values in one "in" (Graph
// answers 400 Request_UnsupportedQuery "Too many child clauses specified in
// search filter expression containing 'OR' operators: 16. Max allowed: 15.").
const MaxFilterValues = 15

// The directory throttle (Microsoft's throttling limits page, identity and
// access service: 3,500, 5,000 or 8,000 resource units per 10 s per app and
// tenant for a small (under 50 users), medium (under 500) or large tenant).
const (
	DirectoryWindow      = 10 * time.Second
	DirectoryLimitSmall  = 3500
	DirectoryLimitMedium = 5000
	DirectoryLimitLarge  = 8000
)

// directoryLimitFor is the resource units per DirectoryWindow of a tenant of
// users users.
func directoryLimitFor(users int) int {
	switch {
	case users < 50:
		return DirectoryLimitSmall
	case users < 500:
		return DirectoryLimitMedium
	}
	return DirectoryLimitLarge
}

// directoryCost is what a directory read costs in resource units. Microsoft's
// page gives a base cost per request shape and adjustments per query option;
// these are approximate: a GET of one user 1, a list (a $filter query) 2,
// $select one less, never below 1.
func directoryCost(list bool, q url.Values) int {
	cost := 1
	if list {
		cost = 2
	}
	if q.Has("$select") {
		cost--
	}
	return max(cost, 1)
}

// DirectoryThrottle is how the directory throttle behaves (Options
// DirectoryLimit and DirectoryWholeBatch, Server.SetDirectoryThrottle,
// POST /_sim/throttle/directory).
type DirectoryThrottle struct {
	// Limit is the resource units one application may spend on directory reads
	// within DirectoryWindow; 0 means by the tenant's size (3,500, 5,000 or
	// 8,000); negative turns the throttle off.
	Limit int `json:"limit"`
	// WholeBatch makes the throttle refuse a $batch as a whole (429 with
	// Retry-After on the outer request, none of its requests served or charged)
	// when it cannot admit all of its directory reads. Otherwise each read over
	// the limit gets its own 429 inside the batch's 200 and the others are
	// answered.
	WholeBatch bool `json:"wholeBatch"`
}

// SetDirectoryThrottle changes the directory throttle while the tenant runs.
// What was admitted in the current window stays counted.
func (s *Server) SetDirectoryThrottle(d DirectoryThrottle) {
	if d.Limit == 0 {
		d.Limit = directoryLimitFor(len(s.dir.users))
	}
	s.dirThrottle.limit.Store(int64(d.Limit))
	s.dirWholeBatch.Store(d.WholeBatch)
	s.log.Info("Directory throttle set", "limit_ru", d.Limit, "window", DirectoryWindow, "whole_batch", d.WholeBatch)
}

// DirectoryThrottle reports the directory throttle's setting (Limit as in
// force: the tenant size's default filled in).
func (s *Server) DirectoryThrottle() DirectoryThrottle {
	return DirectoryThrottle{Limit: int(s.dirThrottle.limit.Load()), WholeBatch: s.dirWholeBatch.Load()}
}

// admitDirectory charges a directory read of cost resource units to app. Over
// the limit it answers 429 with Retry-After itself and returns false.
func (s *Server) admitDirectory(w http.ResponseWriter, r *http.Request, app string, cost int) bool {
	ri := infoOf(r)
	ri.throttle |= throttleDirectory
	if ok, wait := s.dirThrottle.admit(app, s.clock.Now(), cost); !ok {
		ri.dirThrottled++
		secs := retryAfterSeconds(wait)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeRaw(w, http.StatusTooManyRequests, s.directoryThrottled(app, secs))
		return false
	}
	ri.ru += cost
	w.Header().Set("x-ms-resource-unit", strconv.Itoa(cost))
	return true
}

// directoryThrottled is the body of a 429 of the directory throttle.
func (s *Server) directoryThrottled(app string, secs int) []byte {
	s.log.Debug("Directory throttled", "client_id", app, "retry_after_s", secs)
	b, _ := json.Marshal(newGraphError("TooManyRequests", fmt.Sprintf(
		"Too many requests: over %d resource units of directory reads in %s for this application in this tenant. Retry after %d seconds.",
		s.dirThrottle.limit.Load(), DirectoryWindow, secs)))
	return b
}

// handleUser serves GET /v1.0/users/{id | userPrincipalName} ($select honoured).
func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	infoOf(r).ids = 1
	if !s.admitDirectory(w, r, c.AppID, directoryCost(false, q)) {
		return
	}
	status, body := s.userObject(r.PathValue("id"), q.Get("$select"))
	writeRaw(w, status, body)
}

// handleUsers serves GET /v1.0/users?$filter=...&$select=... (see usersList).
func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if !s.admitDirectory(w, r, c.AppID, directoryCost(true, q)) {
		return
	}
	status, body, asked := s.usersList(q)
	infoOf(r).ids = asked
	writeRaw(w, status, body)
}

// userObject answers GET /users/{key}: the user by object id or UPN (a guest's
// by its #EXT# UPN too), with the properties $select names (all four without).
func (s *Server) userObject(key, sel string) (int, []byte) {
	u, ok := s.dir.lookup(key)
	if !ok {
		b, _ := json.Marshal(newGraphError("Request_ResourceNotFound", fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", key)))
		return http.StatusNotFound, b
	}
	out := userFields(s.dir.users[u], selected(sel))
	out["@odata.context"] = "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
	b, _ := json.Marshal(out)
	return http.StatusOK, b
}

// userProperties are the properties the simulated directory has, as Graph
// spells them.
var userProperties = []string{"id", "userPrincipalName", "mail", "displayName"}

// selected is the properties a $select names, in userProperties' spelling and
// the order given; all of them for an empty $select. Names the directory does
// not have are left out.
func selected(sel string) []string {
	if strings.TrimSpace(sel) == "" {
		return userProperties
	}
	var out []string
	for f := range strings.SplitSeq(sel, ",") {
		f = strings.TrimSpace(f)
		for _, p := range userProperties {
			if strings.EqualFold(p, f) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// userFields is user u with the properties props; a user without mail has
// "mail": null, as Graph shows it.
func userFields(u User, props []string) map[string]any {
	out := make(map[string]any, len(props)+1)
	for _, p := range props {
		switch p {
		case "id":
			out[p] = u.ID
		case "userPrincipalName":
			out[p] = u.UPN
		case "mail":
			if u.Mail == "" {
				out[p] = nil
			} else {
				out[p] = u.Mail
			}
		case "displayName":
			out[p] = u.DisplayName
		}
	}
	return out
}

// usersList answers GET /users?$filter=...&$select=...: the users whose
// userPrincipalName or mail is one of the filter's values (case-insensitive),
// once each, in directory order. asked is the number of values in the filter.
// It takes the filters parseUserFilter does and answers 400 to any other.
// (Graph pages a list at 100 users; 15 values never fill a page here, so
// there is no @odata.nextLink.)
func (s *Server) usersList(q url.Values) (status int, body []byte, asked int) {
	filters := q["$filter"]
	if len(filters) > 1 {
		b, _ := json.Marshal(newGraphError("BadRequest", "Query option '$filter' was specified more than once, but it must be specified at most once."))
		return http.StatusBadRequest, b, 0
	}
	if len(filters) == 0 {
		b, _ := json.Marshal(newGraphError(codeUnsupportedQuery,
			"The simulated tenant lists users only with a $filter on userPrincipalName or mail (eq or in)."))
		return http.StatusBadRequest, b, 0
	}
	prop, values, ferr := parseUserFilter(filters[0])
	if ferr != "" {
		b, _ := json.Marshal(newGraphError(codeUnsupportedQuery, ferr))
		return http.StatusBadRequest, b, len(values)
	}
	var idx []int32
	for _, v := range values {
		switch prop {
		case "userPrincipalName":
			if i, ok := s.dir.byUPN[strings.ToLower(v)]; ok {
				idx = append(idx, i)
			}
		case "mail":
			idx = s.dir.withMail(v, idx)
		}
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	props := selected(q.Get("$select"))
	reply := struct {
		Context string           `json:"@odata.context"`
		Value   []map[string]any `json:"value"`
	}{Context: "https://graph.microsoft.com/v1.0/$metadata#users", Value: make([]map[string]any, 0, len(idx))}
	if q.Get("$select") != "" {
		reply.Context += "(" + strings.Join(props, ",") + ")"
	}
	for _, i := range idx {
		reply.Value = append(reply.Value, userFields(s.dir.users[i], props))
	}
	b, _ := json.Marshal(reply)
	return http.StatusOK, b, len(values)
}

// codeUnsupportedQuery is Graph's error code for a $filter it does not take.
const codeUnsupportedQuery = "Request_UnsupportedQuery"

// parseUserFilter reads the $filter expressions the simulated directory
// takes: `userPrincipalName eq 'v'`, `mail eq 'v'`, and `userPrincipalName in
// ('a','b',...)` or `mail in (...)` with at most MaxFilterValues values.
// Property names match ignoring case, the operators are lower case (OData's
// spelling); values are OData string literals in single quotes, a quote
// inside written twice.
// Spaces are needed around eq and before in, and optional elsewhere. It returns
// the property as Graph spells it and the values, or a short message for Graph's
// 400 Request_UnsupportedQuery.
func parseUserFilter(f string) (prop string, values []string, problem string) {
	const unsupported = "Unsupported query: the simulated tenant filters users by userPrincipalName or mail, " +
		"with eq 'value' or in ('value',...)."
	p := filterScanner{s: f}
	p.spaces()
	name := p.word()
	switch {
	case strings.EqualFold(name, "userPrincipalName"):
		prop = "userPrincipalName"
	case strings.EqualFold(name, "mail"):
		prop = "mail"
	case name == "" || strings.HasPrefix(p.s[p.i:], "("): // a function: startswith(...)
		return "", nil, unsupported
	default:
		return "", nil, fmt.Sprintf("Unsupported or invalid query filter clause specified for property '%s' of resource 'User'.", name)
	}
	if !p.spaces() {
		return "", nil, unsupported
	}
	switch p.word() {
	case "eq":
		if !p.spaces() {
			return "", nil, unsupported
		}
		v, ok := p.literal()
		if !ok {
			return "", nil, unsupported
		}
		values = append(values, v)
	case "in":
		p.spaces()
		if !p.take('(') {
			return "", nil, unsupported
		}
		for {
			p.spaces()
			v, ok := p.literal()
			if !ok {
				return "", values, unsupported
			}
			values = append(values, v)
			p.spaces()
			if p.take(',') {
				continue
			}
			if p.take(')') {
				break
			}
			return "", values, unsupported
		}
	default:
		return "", nil, unsupported
	}
	p.spaces()
	if p.i != len(p.s) {
		return "", values, unsupported
	}
	if len(values) > MaxFilterValues {
		return "", values, fmt.Sprintf("Too many child clauses specified in search filter expression containing 'OR' operators: %d. Max allowed: %d.",
			len(values), MaxFilterValues)
	}
	return prop, values, ""
}

// filterScanner walks a $filter expression.
type filterScanner struct {
	s string
	i int
}

// spaces skips spaces and tabs (OData's RWS, decoded) and reports whether
// there were any.
func (p *filterScanner) spaces() bool {
	start := p.i
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
	return p.i > start
}

// word reads a run of letters, digits and underscores.
func (p *filterScanner) word() string {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			break
		}
		p.i++
	}
	return p.s[start:p.i]
}

func (p *filterScanner) take(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// literal reads an OData string literal: 'text', a quote inside written twice.
func (p *filterScanner) literal() (string, bool) {
	if !p.take('\'') {
		return "", false
	}
	var b strings.Builder
	for {
		j := strings.IndexByte(p.s[p.i:], '\'')
		if j < 0 {
			return "", false // unterminated
		}
		b.WriteString(p.s[p.i : p.i+j])
		p.i += j + 1
		if !p.take('\'') {
			return b.String(), true
		}
		b.WriteByte('\'')
	}
}
