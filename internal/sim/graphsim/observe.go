package graphsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Fault is a scripted misbehaviour: the next Count requests whose path ends with
// Path are delayed by Delay and, when Status is set, answered with Status (and a
// Retry-After header when RetryAfter is set) instead of being served.
// Count 0 means once; a negative Count means every matching request until
// ClearFaults. Delay is real time (it exists to trip client timeouts), cut short
// when the client gives up.
type Fault struct {
	Path       string        `json:"path"`
	Status     int           `json:"status,omitempty"`
	RetryAfter string        `json:"retryAfter,omitempty"`
	Count      int           `json:"count,omitempty"`
	Delay      time.Duration `json:"-"`
}

type faultJSON struct {
	Path       string `json:"path"`
	Status     int    `json:"status,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
	Count      int    `json:"count,omitempty"`
	Delay      string `json:"delay,omitempty"` // Go duration, e.g. "1.5s"
}

// MarshalJSON writes Delay as a Go duration string ("1.5s").
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Path: f.Path, Status: f.Status, RetryAfter: f.RetryAfter, Count: f.Count}
	if f.Delay > 0 {
		j.Delay = f.Delay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Delay as a Go duration string ("250ms", "2s").
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fault{Path: j.Path, Status: j.Status, RetryAfter: j.RetryAfter, Count: j.Count}
	if j.Delay != "" {
		d, err := time.ParseDuration(j.Delay)
		if err != nil {
			return fmt.Errorf("fault delay %q: %w (want a Go duration such as \"250ms\" or \"2s\")", j.Delay, err)
		}
		f.Delay = d
	}
	return nil
}

type faultQueue struct {
	mu     sync.Mutex
	faults []*Fault
}

// take returns the first fault matching path and consumes one of its uses.
func (q *faultQueue) take(path string) (Fault, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, f := range q.faults {
		if !strings.HasSuffix(path, f.Path) {
			continue
		}
		out := *f
		if f.Count >= 0 {
			f.Count--
			if f.Count <= 0 {
				q.faults = append(q.faults[:i], q.faults[i+1:]...)
			}
		}
		return out, true
	}
	return Fault{}, false
}

// InjectFault queues f; faults are matched in the order they were injected.
func (s *Server) InjectFault(f Fault) {
	if f.Count == 0 {
		f.Count = 1
	}
	s.log.Info("Fault injected", "path", f.Path, "status", f.Status, "count", f.Count, "delay", f.Delay)
	s.faults.mu.Lock()
	s.faults.faults = append(s.faults.faults, &f) // from here on, requests consume f.Count
	s.faults.mu.Unlock()
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	s.faults.faults = nil
	s.faults.mu.Unlock()
}

// RequestRecord is one request the simulator answered (control API excluded).
type RequestRecord struct {
	At     time.Time `json:"at"`
	App    string    `json:"app,omitempty"` // client id: from the token (Graph) or the form (login)
	Path   string    `json:"path"`
	IDs    int       `json:"ids,omitempty"` // ids asked (getPresencesByUserId), values in a $filter, or requests in a $batch
	Status int       `json:"status"`
	// Throttle names the throttles the request (or its $batch items) went
	// through: "presence", "directory" or "presence,directory"; "" for none
	// (login, a refused token, a scripted fault).
	Throttle string `json:"throttle,omitempty"`
	// RU is the resource units the directory throttle charged.
	RU int `json:"ru,omitempty"`
	// ItemsThrottled is the $batch items answered 429.
	ItemsThrottled int `json:"itemsThrottled,omitempty"`
}

// throttleNames is RequestRecord.Throttle by reqInfo.throttle.
var throttleNames = [...]string{
	0:                                    "",
	throttlePresence:                     "presence",
	throttleDirectory:                    "directory",
	throttlePresence | throttleDirectory: "presence,directory",
}

// WriteRecord is one setPresence or clearPresence the simulator answered,
// accepted or not (a scripted fault's answer included).
type WriteRecord struct {
	// At is when it was answered on the tenant's clock; for an accepted write,
	// when Graph began to show it.
	At time.Time `json:"at"`
	// Op is OpSetPresence or OpClearPresence.
	Op string `json:"op"`
	// User is the user's object id (the path's id as sent when it is not a
	// user of the directory); UPN is set when it is.
	User string `json:"user"`
	UPN  string `json:"upn,omitempty"`
	// App is the application (client) id of the token; empty when the token
	// was not accepted.
	App       string `json:"app,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	// Availability and Activity are as sent, or canonical once accepted.
	Availability string `json:"availability,omitempty"`
	Activity     string `json:"activity,omitempty"`
	// ExpirationDuration is as sent ("" = the default PT5M); Expiration is the
	// duration it gave (set once the body passed its checks) and Expires when
	// an accepted setPresence's session ends unless renewed.
	ExpirationDuration string        `json:"expirationDuration,omitempty"`
	Expiration         time.Duration `json:"-"`
	Expires            time.Time     `json:"expires,omitzero"`
	// Status is the HTTP status answered; Error Graph's error code, if any;
	// RetryAfter the Retry-After header of a 429.
	Status     int    `json:"status"`
	Error      string `json:"error,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
}

// Accepted reports whether Graph took the write (200).
func (w WriteRecord) Accepted() bool { return w.Status == http.StatusOK }

// Stats is what the simulator saw since start or the last ResetStats.
type Stats struct {
	// Endpoints counts requests per route, e.g.
	// "POST /v1.0/communications/getPresencesByUserId".
	Endpoints map[string]int `json:"endpoints"`
	// Throttled counts 429 answers to requests (the throttles' and scripted
	// ones; not those of $batch items).
	Throttled int `json:"throttled"`
	// DirectoryThrottled counts the directory throttle's 429s: to a request,
	// to a $batch item, or to a whole $batch.
	DirectoryThrottled int `json:"directoryThrottled"`
	// MaxInWindow is, per app client id, the most presence requests admitted
	// within one window of the presence throttle.
	MaxInWindow map[string]int `json:"maxInWindow"`
	// MaxDirectoryRU is, per app client id, the most resource units the
	// directory throttle admitted within one DirectoryWindow.
	MaxDirectoryRU map[string]int `json:"maxDirectoryRU"`
	// PresenceIDs is the total of ids asked in successful getPresencesByUserId calls.
	PresenceIDs int `json:"presenceIds"`
	// Changes is how many presence changes were made (engine and SetPresence).
	Changes int `json:"changes"`
	// Requests lists requests, oldest first; only the most recent maxRecords are
	// kept, DroppedRequests counts the others.
	Requests        []RequestRecord `json:"requests,omitempty"`
	DroppedRequests int             `json:"droppedRequests,omitempty"`
	// Writes lists setPresence and clearPresence calls, oldest first; only the
	// most recent maxWriteRecords are kept, DroppedWrites counts the others.
	Writes        []WriteRecord `json:"writes,omitempty"`
	DroppedWrites int           `json:"droppedWrites,omitempty"`
}

const (
	maxRecords      = 200_000
	maxWriteRecords = 100_000
)

type statsRecorder struct {
	mu          sync.Mutex
	endpoints   map[string]int
	throttled   int
	dirThrottle int
	presenceIDs int
	records     []RequestRecord
	dropped     int
	writes      []WriteRecord
	droppedW    int
	changesBase int
}

func (r *statsRecorder) init() {
	r.endpoints = map[string]int{}
	r.records, r.writes = nil, nil
	r.throttled, r.dirThrottle, r.presenceIDs, r.dropped, r.droppedW = 0, 0, 0, 0, 0
}

func (r *statsRecorder) addWrite(rec WriteRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.writes) >= maxWriteRecords {
		keep := maxWriteRecords / 2
		n := copy(r.writes, r.writes[len(r.writes)-keep:])
		r.droppedW += len(r.writes) - n
		r.writes = r.writes[:n]
	}
	r.writes = append(r.writes, rec)
}

func (r *statsRecorder) add(endpoint string, rec RequestRecord, ri *reqInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints[endpoint]++
	if rec.Status == http.StatusTooManyRequests {
		r.throttled++
	}
	r.dirThrottle += ri.dirThrottled
	r.presenceIDs += ri.presenceIDs
	if len(r.records) >= maxRecords {
		keep := maxRecords / 2
		n := copy(r.records, r.records[len(r.records)-keep:])
		r.dropped += len(r.records) - n
		r.records = r.records[:n]
	}
	r.records = append(r.records, rec)
}

// Stats returns a snapshot of the statistics.
func (s *Server) Stats() Stats {
	st := Stats{MaxInWindow: s.throttle.maxInWindow(), MaxDirectoryRU: s.dirThrottle.maxInWindow()}
	s.stats.mu.Lock()
	st.Endpoints = make(map[string]int, len(s.stats.endpoints))
	for k, v := range s.stats.endpoints {
		st.Endpoints[k] = v
	}
	st.Throttled = s.stats.throttled
	st.DirectoryThrottled = s.stats.dirThrottle
	st.PresenceIDs = s.stats.presenceIDs
	st.Requests = append([]RequestRecord(nil), s.stats.records...)
	st.DroppedRequests = s.stats.dropped
	st.Writes = append([]WriteRecord(nil), s.stats.writes...)
	st.DroppedWrites = s.stats.droppedW
	base := s.stats.changesBase
	s.stats.mu.Unlock()
	st.Changes = int(s.dir.totalChanges.Load()) - base
	return st
}

// Writes lists the setPresence and clearPresence calls answered since start or
// the last ResetStats, oldest first (at most the most recent 100,000).
func (s *Server) Writes() []WriteRecord {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return append([]WriteRecord(nil), s.stats.writes...)
}

// ResetStats zeroes the statistics (and the throttles' MaxInWindow and
// MaxDirectoryRU), not the throttle windows themselves or the change record.
func (s *Server) ResetStats() {
	s.stats.mu.Lock()
	s.stats.init()
	s.stats.changesBase = int(s.dir.totalChanges.Load())
	s.stats.mu.Unlock()
	s.throttle.resetMax()
	s.dirThrottle.resetMax()
}

// reqInfo is filled by handlers for the stats record.
type reqInfo struct {
	app         string
	ids         int
	presenceIDs int
	throttle    int // throttlePresence | throttleDirectory: the throttles that applied
	ru          int // resource units the directory throttle charged
	// dirThrottled counts the directory throttle's 429s: the request's own, or
	// its $batch items'; itemsThrottled the $batch items answered 429.
	dirThrottled   int
	itemsThrottled int
}

// Throttles a request went through (reqInfo.throttle).
const (
	throttlePresence = 1 << iota
	throttleDirectory
)

type reqInfoKey struct{}

func infoOf(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP applies scripted faults, serves the request and records it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	ri := &reqInfo{}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
	sw := &statusWriter{ResponseWriter: w}
	endpoint := ""
	if f, ok := s.faults.take(r.URL.Path); ok {
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if f.Status != 0 {
			_, endpoint = s.mux.Handler(r)
			code := s.writeFault(sw, r, f)
			if op, user, ok := writeOp(r); ok {
				s.stats.addWrite(WriteRecord{At: s.clock.Now(), Op: op, User: user, Status: f.Status, Error: code, RetryAfter: f.RetryAfter})
			}
		}
	}
	if sw.status == 0 {
		s.mux.ServeHTTP(sw, r)
		endpoint = r.Pattern
	}
	if endpoint == "" {
		endpoint = "unmatched"
	}
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	s.stats.add(endpoint, RequestRecord{At: s.clock.Now(), App: ri.app, Path: r.URL.Path, IDs: ri.ids, Status: sw.status,
		Throttle: throttleNames[ri.throttle], RU: ri.ru, ItemsThrottled: ri.itemsThrottled}, ri)
}

// writeOp tells a presence write (POST /v1.0/users/{id}/presence/setPresence or
// clearPresence) by its path, for recording a scripted fault's answer to it.
func writeOp(r *http.Request) (op, user string, ok bool) {
	if r.Method != http.MethodPost {
		return "", "", false
	}
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(seg) != 5 || seg[0] != "v1.0" || seg[1] != "users" || seg[3] != "presence" {
		return "", "", false
	}
	switch seg[4] {
	case OpSetPresence, OpClearPresence:
		return seg[4], seg[2], true
	}
	return "", "", false
}

// writeFault answers with the scripted fault f and returns the error code it
// put in the body.
func (s *Server) writeFault(w http.ResponseWriter, r *http.Request, f Fault) string {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if isLoginPath(r.URL.Path) {
		writeOAuthError(w, f.Status, "temporarily_unavailable", 0, fmt.Sprintf("Scripted fault: HTTP %d.", f.Status))
		return "temporarily_unavailable"
	}
	code := "ServiceNotAvailable"
	switch {
	case f.Status == http.StatusTooManyRequests:
		code = "TooManyRequests"
	case f.Status == http.StatusUnauthorized:
		code = "InvalidAuthenticationToken"
	case f.Status == http.StatusForbidden:
		code = "Forbidden"
	case f.Status == http.StatusNotFound:
		code = "Request_ResourceNotFound"
	case f.Status < 500:
		code = "BadRequest"
	case f.Status == http.StatusGatewayTimeout:
		code = "GatewayTimeout"
	}
	writeGraphError(w, f.Status, code, fmt.Sprintf("Scripted fault: HTTP %d.", f.Status))
	return code
}
