package graphsim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
)

// benchTenant is a 50,000-user tenant with a busy engine and no throttle, and the
// body of one 650-id getPresencesByUserId request.
func benchTenant(b *testing.B) (*graphsim.Server, string, []byte) {
	b.Helper()
	s, _ := startFake(b, graphsim.Options{Users: 50000, ChangesPerUserPerHour: 6, ThrottleLimit: -1})
	users := s.Users()
	ids := make([]string, 650)
	for i := range ids {
		ids[i] = users[i*76].ID // spread over the directory
	}
	body, err := json.Marshal(map[string][]string{"ids": ids})
	if err != nil {
		b.Fatal(err)
	}
	return s, appToken(b, s), body
}

// BenchmarkGetPresences650 measures the server's own cost of one 650-id request
// (handler called in-process: token check, throttle, parse, lookup, reply).
func BenchmarkGetPresences650(b *testing.B) {
	s, tok, body := benchTenant(b)
	h := s.Handler()
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, "https://127.0.0.1/v1.0/communications/getPresencesByUserId", rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != 0 && w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
	b.StopTimer()
	s.ResetStats() // keep the request record from growing across runs
}

// BenchmarkGetPresences650Parallel is the same with all cores and the engine
// stepping concurrently, to show that readers do not queue behind a lock.
func BenchmarkGetPresences650Parallel(b *testing.B) {
	s, tok, body := benchTenant(b)
	h := s.Handler()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond): // the engine 100 times faster than real time
				s.Step(100 * time.Millisecond)
			}
		}
	}()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rd := bytes.NewReader(body)
		req := httptest.NewRequest(http.MethodPost, "https://127.0.0.1/v1.0/communications/getPresencesByUserId", rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			rd.Reset(body)
			req.Body = io.NopCloser(rd)
			h.ServeHTTP(w, req)
		}
	})
	close(stop)
	<-done
}

// BenchmarkGetPresences650TLS is one request end to end over loopback TLS.
func BenchmarkGetPresences650TLS(b *testing.B) {
	s, tok, body := benchTenant(b)
	c := s.Client()
	url := s.GraphURL() + "/communications/getPresencesByUserId"
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	s.ResetStats()
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
