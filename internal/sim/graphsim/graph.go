package graphsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Graph limits the simulator enforces.
const (
	// MaxPresenceIDs: getPresencesByUserId takes at most 650 ids a request
	// (https://learn.microsoft.com/graph/api/cloudcommunications-getpresencesbyuserid).
	MaxPresenceIDs = 650
	// MaxBatchRequests: JSON batching takes at most 20 requests
	// (https://learn.microsoft.com/graph/json-batching).
	MaxBatchRequests = 20
)

const presenceContext = `https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)`

// graphError is Graph's error body.
type graphError struct {
	Error graphErrorBody `json:"error"`
}

type graphErrorBody struct {
	Code       string            `json:"code"`
	Message    string            `json:"message"`
	InnerError map[string]string `json:"innerError,omitempty"`
}

func newGraphError(code, msg string) graphError {
	return graphError{Error: graphErrorBody{Code: code, Message: msg, InnerError: map[string]string{
		"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": newGUID(), "client-request-id": newGUID(),
	}}}
}

func writeGraphError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, newGraphError(code, msg))
}

// bearerChallenge is Graph's WWW-Authenticate challenge for a request without a
// token; a claims challenge (revoked) extends it.
const bearerChallenge = `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`

// authorize checks the bearer token and the presence throttle of its app: the
// presence requests' (getPresencesByUserId, /users/{id}/presence, setPresence,
// clearPresence). It answers the request itself (401 or 429) and returns false
// when the request must stop.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (*tokenClaims, bool) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return nil, false
	}
	ri := infoOf(r)
	ri.throttle |= throttlePresence
	ok, wait := s.throttle.admit(c.AppID, s.clock.Now(), 1)
	if !ok {
		secs := retryAfterSeconds(wait)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.log.Debug("Throttled", "client_id", c.AppID, "retry_after_s", secs)
		writeGraphError(w, http.StatusTooManyRequests, "TooManyRequests", s.presenceThrottled(secs))
		return nil, false
	}
	return c, true
}

// presenceThrottled is the message of a 429 of the presence throttle.
func (s *Server) presenceThrottled(secs int) string {
	return fmt.Sprintf("Too many requests: over %d requests in %s for this application in this tenant. Retry after %d seconds.",
		s.throttle.limit.Load(), s.throttle.window, secs)
}

// authenticate checks the bearer token: signature, tenant, revocation and
// lifetime. It answers the request itself (401) and returns false when the
// request must stop.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*tokenClaims, bool) {
	h := r.Header.Get("Authorization")
	tok, found := cutPrefixFold(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	if !found || tok == "" {
		w.Header().Set("WWW-Authenticate", bearerChallenge)
		writeGraphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty.")
		return nil, false
	}
	c, problem := s.verifyAccessToken(tok)
	if problem != "" {
		writeGraphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", problem)
		return nil, false
	}
	infoOf(r).app = c.AppID
	if revoked, challenge := s.revoked(c.Gen); revoked {
		if challenge != "" {
			w.Header().Set("WWW-Authenticate", challenge)
		}
		writeGraphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp")
		return nil, false
	}
	if s.clock.Now().Unix() >= c.Exp {
		writeGraphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
		return nil, false
	}
	return c, true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 4<<20 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// readBody reads the request body (at most limit bytes) into a pooled buffer.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (*[]byte, error) {
	buf := getBuf()
	b := bytes.NewBuffer(*buf)
	_, err := b.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	*buf = b.Bytes()
	if err != nil {
		putBuf(buf)
		return nil, err
	}
	return buf, nil
}

// handlePresences serves POST /v1.0/communications/getPresencesByUserId. The work
// is proportional to the ids asked: ids are scanned without allocation, looked up
// in a read-only map, and each presence is appended from pre-rendered JSON.
func (s *Server) handlePresences(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r); !ok {
		return
	}
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", "Could not read the request body: "+err.Error())
		return
	}
	defer putBuf(body)
	idx, asked, ok := s.scanIDs(*body, make([]presenceHit, 0, MaxPresenceIDs))
	if !ok {
		var req struct {
			IDs []string `json:"ids"`
		}
		if err := json.Unmarshal(*body, &req); err != nil {
			writeGraphError(w, http.StatusBadRequest, "BadRequest", "Invalid request body: "+err.Error())
			return
		}
		idx, asked = idx[:0], len(req.IDs)
		if asked <= MaxPresenceIDs {
			for _, id := range req.IDs {
				if u, found := s.dir.lookupID(id); found {
					idx = append(idx, presenceHit{user: u, at: -1})
				}
			}
		}
	}
	ri := infoOf(r)
	ri.ids = asked
	if asked > MaxPresenceIDs {
		writeGraphError(w, http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("The request asked for %d ids; getPresencesByUserId takes at most %d.", asked, MaxPresenceIDs))
		return
	}
	if asked == 0 {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", "The ids list is empty.")
		return
	}
	ri.presenceIDs = asked
	s.expireSessions()

	out := getBuf()
	defer putBuf(out)
	b := append(*out, `{"@odata.context":"`+presenceContext+`","value":[`...)
	pairs := *s.dir.pairs.list.Load()
	stale := s.dir.staleN.Load() != 0
	for i, h := range idx {
		if i > 0 {
			b = append(b, ',')
		}
		word := s.dir.shownWord(h.user, stale)
		b = append(b, `{"id":"`...)
		if h.at >= 0 {
			b = append(b, (*body)[h.at:h.at+guidLen]...)
		} else {
			b = append(b, s.dir.users[h.user].ID...)
		}
		b = s.dir.appendSequenceField(b, word)
		b = append(b, pairs[pairOf(word)].tail...) // closes the sequenceNumber string
	}
	b = append(b, "]}"...)
	*out = b
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// presenceHit is a user getPresencesByUserId asked for: the user, and where
// in the request body the id was asked when it is written as the directory
// writes it (so the reply copies those bytes, already in the cache), or -1.
type presenceHit struct {
	user int32
	at   int
}

// scanIDs is the fast path for the common body `{"ids":["...",...]}` (any
// whitespace, no escapes). It appends the users found, counts all ids asked, and
// reports false when the body has any other shape, so the caller falls back to
// encoding/json. Beyond MaxPresenceIDs it only counts. An id is looked for in
// the directory's idIndex first, then (another spelling) in its map.
func (s *Server) scanIDs(b []byte, idx []presenceHit) ([]presenceHit, int, bool) {
	i := 0
	ws := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
			i++
		}
	}
	expect := func(c byte) bool {
		ws()
		if i < len(b) && b[i] == c {
			i++
			return true
		}
		return false
	}
	str := func() (at int, v []byte, ok bool) {
		ws()
		if i >= len(b) || b[i] != '"' {
			return 0, nil, false
		}
		i++
		end := bytes.IndexByte(b[i:], '"')
		if end < 0 || bytes.IndexByte(b[i:i+end], '\\') >= 0 {
			return 0, nil, false // unterminated or escaped: let encoding/json decide
		}
		at, v = i, b[i:i+end]
		i += end + 1
		return at, v, true
	}
	if !expect('{') {
		return idx, 0, false
	}
	if _, key, ok := str(); !ok || string(key) != "ids" {
		return idx, 0, false
	}
	if !expect(':') || !expect('[') {
		return idx, 0, false
	}
	n := 0
	if !expect(']') {
		for {
			at, id, ok := str()
			if !ok {
				return idx, 0, false
			}
			n++
			if n > MaxPresenceIDs {
				// only counted
			} else if u, found := s.dir.ids.find(id); found {
				idx = append(idx, presenceHit{user: u, at: at})
			} else if u, found := s.dir.lookupIDBytes(id); found {
				idx = append(idx, presenceHit{user: u, at: -1})
			}
			if expect(',') {
				continue
			}
			if expect(']') {
				break
			}
			return idx, 0, false
		}
	}
	if !expect('}') {
		return idx, 0, false
	}
	ws()
	return idx, n, i == len(b)
}

// handleUserPresence serves GET /v1.0/users/{id}/presence.
func (s *Server) handleUserPresence(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r); !ok {
		return
	}
	key := r.PathValue("id")
	infoOf(r).ids = 1
	status, body := s.userPresence(key)
	writeRaw(w, status, body)
}

func (s *Server) userPresence(key string) (int, []byte) {
	u, ok := s.dir.lookup(key)
	if !ok {
		b, _ := json.Marshal(newGraphError("Request_ResourceNotFound", fmt.Sprintf("Resource '%s' does not exist or one of its queried reference-property objects are not present.", key)))
		return http.StatusNotFound, b
	}
	s.expireSessions()
	id := s.dir.users[u].ID
	b := make([]byte, 0, 256)
	b = append(b, `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users('`...)
	b = append(b, id...)
	word := s.dir.shownWord(u, s.dir.staleN.Load() != 0)
	b = append(b, `')/presence","id":"`...)
	b = append(b, id...)
	b = s.dir.appendSequenceField(b, word)
	b = append(b, s.dir.pairs.get(pairOf(word)).tail...) // closes the sequenceNumber string
	return http.StatusOK, b
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type batchRequest struct {
	ID      string            `json:"id"`
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
}

type batchResponse struct {
	ID      string            `json:"id"`
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// batchContentType is the Content-Type Graph gives a $batch item's body.
const batchContentType = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"

// handleBatch serves POST /v1.0/$batch with GET /users/{id|upn},
// GET /users?$filter=... and GET /users/{id}/presence inside. Each request is
// throttled on its own, as Graph does (graph/json-batching): the directory
// reads by the directory throttle, a presence read by the presence throttle;
// one over its limit gets its own 429 with Retry-After in the batch's 200.
// The $batch itself counts in neither, unless the directory throttle is set
// to refuse whole batches (DirectoryThrottle.WholeBatch).
func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var req struct {
		Requests []batchRequest `json:"requests"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", "Invalid batch payload format: "+err.Error())
		return
	}
	ri := infoOf(r)
	ri.ids = len(req.Requests)
	switch n := len(req.Requests); {
	case n == 0:
		writeGraphError(w, http.StatusBadRequest, "BadRequest", "Invalid batch payload format: the batch has no requests.")
		return
	case n > MaxBatchRequests:
		writeGraphError(w, http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("Number of batch requests exceeds the limit of %d (got %d).", MaxBatchRequests, n))
		return
	}
	seen := make(map[string]bool, len(req.Requests))
	for _, q := range req.Requests {
		if q.ID == "" || seen[q.ID] {
			writeGraphError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Invalid batch payload format: request id %q is empty or not unique.", q.ID))
			return
		}
		seen[q.ID] = true
	}
	items := make([]batchItem, len(req.Requests))
	wholeCost := 0
	for i, q := range req.Requests {
		items[i] = parseBatchItem(q)
		if items[i].kind == itemUser || items[i].kind == itemUsers {
			wholeCost += items[i].cost
		}
	}
	charged := false
	if wholeCost > 0 && s.dirWholeBatch.Load() {
		ri.throttle |= throttleDirectory
		ok, wait := s.dirThrottle.admit(c.AppID, s.clock.Now(), wholeCost)
		if !ok {
			ri.dirThrottled++
			secs := retryAfterSeconds(wait)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeRaw(w, http.StatusTooManyRequests, s.directoryThrottled(c.AppID, secs))
			return
		}
		ri.ru += wholeCost
		charged = true
	}
	resp := struct {
		Responses []batchResponse `json:"responses"`
	}{Responses: make([]batchResponse, 0, len(req.Requests))}
	for i, q := range req.Requests {
		resp.Responses = append(resp.Responses, s.serveBatchItem(c.AppID, ri, q.ID, items[i], charged))
	}
	writeJSON(w, http.StatusOK, resp)
}

// What a $batch item asks for.
const (
	itemBad          = iota // answered 400 with body
	itemUser                // GET /users/{key}
	itemUsers               // GET /users?$filter=...
	itemUserPresence        // GET /users/{key}/presence
)

type batchItem struct {
	kind  int
	key   string
	query url.Values
	cost  int    // resource units, directory reads
	body  []byte // itemBad's error body
}

// parseBatchItem reads one request of a $batch: its method and relative URL.
func parseBatchItem(q batchRequest) batchItem {
	bad := func(msg string) batchItem {
		b, _ := json.Marshal(newGraphError("BadRequest", msg))
		return batchItem{kind: itemBad, body: b}
	}
	if !strings.EqualFold(q.Method, http.MethodGet) {
		return bad(fmt.Sprintf("The simulated tenant batches GET requests only, not %q.", q.Method))
	}
	u, err := url.Parse(q.URL)
	if err != nil || u.IsAbs() {
		return bad(fmt.Sprintf("Invalid request URL %q: batch URLs are relative, e.g. /users/{id}.", q.URL))
	}
	path := strings.Trim(u.EscapedPath(), "/")
	path = strings.TrimPrefix(path, "v1.0/")
	seg := strings.Split(path, "/")
	query := u.Query()
	if len(seg) == 1 && strings.EqualFold(seg[0], "users") {
		return batchItem{kind: itemUsers, query: query, cost: directoryCost(true, query)}
	}
	if len(seg) < 2 || len(seg) > 3 || !strings.EqualFold(seg[0], "users") || (len(seg) == 3 && !strings.EqualFold(seg[2], "presence")) {
		return bad(fmt.Sprintf("Resource not found for the segment in %q: the simulated tenant batches /users?$filter=..., /users/{id} and /users/{id}/presence.", q.URL))
	}
	key, err := url.PathUnescape(seg[1])
	if err != nil {
		return bad(fmt.Sprintf("Invalid escape in %q.", q.URL))
	}
	if len(seg) == 3 {
		return batchItem{kind: itemUserPresence, key: key}
	}
	return batchItem{kind: itemUser, key: key, query: query, cost: directoryCost(false, query)}
}

// serveBatchItem answers one request of a $batch of app, throttled on its own
// (unless charged: the whole batch was admitted already).
func (s *Server) serveBatchItem(app string, ri *reqInfo, id string, it batchItem, charged bool) batchResponse {
	out := batchResponse{ID: id, Headers: map[string]string{"Content-Type": batchContentType}}
	throttled := func(secs int, body []byte) batchResponse {
		ri.itemsThrottled++
		out.Status, out.Body = http.StatusTooManyRequests, body
		out.Headers["Retry-After"] = strconv.Itoa(secs)
		return out
	}
	switch it.kind {
	case itemBad:
		out.Status, out.Body = http.StatusBadRequest, it.body
	case itemUserPresence:
		ri.throttle |= throttlePresence
		if ok, wait := s.throttle.admit(app, s.clock.Now(), 1); !ok {
			secs := retryAfterSeconds(wait)
			b, _ := json.Marshal(newGraphError("TooManyRequests", s.presenceThrottled(secs)))
			return throttled(secs, b)
		}
		out.Status, out.Body = s.userPresence(it.key)
	case itemUser, itemUsers:
		ri.throttle |= throttleDirectory
		if !charged {
			if ok, wait := s.dirThrottle.admit(app, s.clock.Now(), it.cost); !ok {
				ri.dirThrottled++
				secs := retryAfterSeconds(wait)
				return throttled(secs, s.directoryThrottled(app, secs))
			}
			ri.ru += it.cost
		}
		out.Headers["x-ms-resource-unit"] = strconv.Itoa(it.cost)
		if it.kind == itemUser {
			out.Status, out.Body = s.userObject(it.key, it.query.Get("$select"))
		} else {
			out.Status, out.Body, _ = s.usersList(it.query)
		}
	}
	return out
}

// handleApplication answers GET /v1.0/applications(appId='X')?$select=passwordCredentials
// for a caller holding Application.Read.All (as role or delegated scope).
func (s *Server) handleApplication(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authenticate(w, r)
	if !ok || !s.admitDirectory(w, r, c.AppID, directoryCost(false, r.URL.Query())) {
		return
	}
	obj := r.PathValue("object")
	id, found := strings.CutPrefix(obj, "applications(appId='")
	id, closed := strings.CutSuffix(id, "')")
	if !found || !closed {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Resource not found for the segment '%s'.", obj))
		return
	}
	if !slices.Contains(c.Roles, "Application.Read.All") && !slices.Contains(strings.Fields(c.Scp), "Application.Read.All") {
		writeGraphError(w, http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
		return
	}
	app, ok := s.apps[id]
	if !ok {
		writeGraphError(w, http.StatusNotFound, "Request_ResourceNotFound", fmt.Sprintf("Resource '%s' does not exist.", id))
		return
	}
	var creds []map[string]any
	if app.Secret != "" {
		end := app.SecretExpires
		if end.IsZero() {
			end = s.born.AddDate(2, 0, 0)
		}
		creds = append(creds, map[string]any{"keyId": newGUID(), "displayName": "presencebridge",
			"hint": app.Secret[:min(3, len(app.Secret))], "startDateTime": s.born.UTC().Format(time.RFC3339),
			"endDateTime": end.UTC().Format(time.RFC3339)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"appId": id, "passwordCredentials": creds})
}
