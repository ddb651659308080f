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
	IDs    int       `json:"ids,omitempty"` // ids asked (getPresencesByUserId) or requests in a $batch
	Status int       `json:"status"`
}

// Stats is what the simulator saw since start or the last ResetStats.
type Stats struct {
	// Endpoints counts requests per route, e.g.
	// "POST /v1.0/communications/getPresencesByUserId".
	Endpoints map[string]int `json:"endpoints"`
	// Throttled counts 429 answers (the throttle's and scripted ones).
	Throttled int `json:"throttled"`
	// MaxInWindow is, per app client id, the most Graph requests admitted within
	// one throttle window.
	MaxInWindow map[string]int `json:"maxInWindow"`
	// PresenceIDs is the total of ids asked in successful getPresencesByUserId calls.
	PresenceIDs int `json:"presenceIds"`
	// Changes is how many presence changes were made (engine and SetPresence).
	Changes int `json:"changes"`
	// Requests lists requests, oldest first; only the most recent maxRecords are
	// kept, DroppedRequests counts the others.
	Requests        []RequestRecord `json:"requests,omitempty"`
	DroppedRequests int             `json:"droppedRequests,omitempty"`
}

const maxRecords = 200_000

type statsRecorder struct {
	mu          sync.Mutex
	endpoints   map[string]int
	throttled   int
	presenceIDs int
	records     []RequestRecord
	dropped     int
	changesBase int
}

func (r *statsRecorder) init() {
	r.endpoints = map[string]int{}
	r.records = nil
	r.throttled, r.presenceIDs, r.dropped = 0, 0, 0
}

func (r *statsRecorder) add(endpoint string, rec RequestRecord, presenceIDs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints[endpoint]++
	if rec.Status == http.StatusTooManyRequests {
		r.throttled++
	}
	r.presenceIDs += presenceIDs
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
	st := Stats{MaxInWindow: s.throttle.maxInWindow()}
	s.stats.mu.Lock()
	st.Endpoints = make(map[string]int, len(s.stats.endpoints))
	for k, v := range s.stats.endpoints {
		st.Endpoints[k] = v
	}
	st.Throttled = s.stats.throttled
	st.PresenceIDs = s.stats.presenceIDs
	st.Requests = append([]RequestRecord(nil), s.stats.records...)
	st.DroppedRequests = s.stats.dropped
	base := s.stats.changesBase
	s.stats.mu.Unlock()
	st.Changes = int(s.dir.totalChanges.Load()) - base
	return st
}

// ResetStats zeroes the statistics (and the throttle's MaxInWindow), not the
// throttle windows themselves or the change record.
func (s *Server) ResetStats() {
	s.stats.mu.Lock()
	s.stats.init()
	s.stats.changesBase = int(s.dir.totalChanges.Load())
	s.stats.mu.Unlock()
	s.throttle.resetMax()
}

// reqInfo is filled by handlers for the stats record.
type reqInfo struct {
	app         string
	ids         int
	presenceIDs int
}

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
			s.writeFault(sw, r, f)
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
	s.stats.add(endpoint, RequestRecord{At: s.clock.Now(), App: ri.app, Path: r.URL.Path, IDs: ri.ids, Status: sw.status}, ri.presenceIDs)
}

func (s *Server) writeFault(w http.ResponseWriter, r *http.Request, f Fault) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if isLoginPath(r.URL.Path) {
		writeOAuthError(w, f.Status, "temporarily_unavailable", 0, fmt.Sprintf("Scripted fault: HTTP %d.", f.Status))
		return
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
}
