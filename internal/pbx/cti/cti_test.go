package cti

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// cti is a TLS test CTI that records the documents it accepts.
type cti struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	docs   []Document
	hdrs   []http.Header
	// reply, if set, answers instead of 200.
	reply atomic.Pointer[func(w http.ResponseWriter) bool]
}

func newCTI(t *testing.T, clientCAs *x509.CertPool) *cti {
	t.Helper()
	c := &cti{}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := c.reply.Load(); f != nil && (*f)(w) {
			return
		}
		var docs []Document
		var raw json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
		var b Batch
		if json.Unmarshal(raw, &b) == nil && b.Changes != nil {
			docs = b.Changes
		} else {
			var d Document
			json.Unmarshal(raw, &d)
			docs = []Document{d}
		}
		c.mu.Lock()
		c.docs = append(c.docs, docs...)
		c.hdrs = append(c.hdrs, r.Header.Clone())
		c.mu.Unlock()
		w.WriteHeader(204)
	}))
	c.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	if clientCAs != nil {
		c.srv.TLS = &tls.Config{ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert}
	}
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	c.caFile = filepath.Join(t.TempDir(), "cti-ca.pem")
	os.WriteFile(c.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.srv.Certificate().Raw}), 0o644)
	return c
}

func (c *cti) setReply(f func(w http.ResponseWriter) bool) { c.reply.Store(&f) }

func (c *cti) received() []Document {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Document(nil), c.docs...)
}

func item(upn string, seq uint64) delivery.Item {
	s := presence.State{UPN: upn, Availability: presence.Busy, Activity: presence.ActInACall}
	return delivery.Item{User: users.User{UPN: upn, SIPURI: "sip:1001@pbx.example", Extension: "1001", Name: "Alice"},
		State: s, Mapped: presence.DefaultMapping().Map(s), Reason: delivery.ReasonChange, Seq: seq,
		Queued: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)}
}

func TestDocumentHeadersAndCAFile(t *testing.T) {
	c := newCTI(t, nil)
	tg, err := New(Options{Settings: filled(Settings{URL: c.srv.URL + "/presence", CAFile: c.caFile, Headers: map[string]secret.Value{"Authorization": "Bearer tok-123"}})})
	if err != nil {
		t.Fatal(err)
	}
	errs := tg.Send(context.Background(), []delivery.Item{item("alice@contoso.example", 7), item("bob@contoso.example", 8)})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	docs := c.received()
	if len(docs) != 2 {
		t.Fatalf("received %d documents", len(docs))
	}
	want := Document{UPN: "alice@contoso.example", SIPURI: "sip:1001@pbx.example", Extension: "1001", Name: "Alice",
		State: "oncall", Basic: "open", Activity: "on-the-phone", Note: "In a call",
		Teams: Teams{Availability: "Busy", Activity: "InACall"}, Source: "teams", Reason: "change",
		ChangedAt: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC), Seq: 7}
	found := false
	for _, d := range docs {
		found = found || d == want
	}
	if !found {
		t.Errorf("documents %+v lack %+v", docs, want)
	}
	h := c.hdrs[0]
	if h.Get("Authorization") != "Bearer tok-123" || h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != "presencebridge" {
		t.Errorf("headers = %v", h)
	}
}

func TestUntrustedCertificateSaysWhatToDo(t *testing.T) {
	c := newCTI(t, nil)
	otherCA := testkit.NewCA(t, pki.Options{CommonName: "some other CA"})
	otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
	os.WriteFile(otherFile, otherCA.CertPEM, 0o644)
	cases := []struct {
		name, caFile string
		want         []string
	}{
		{"no CA file", "", []string{"not trusted", "put the CA that signed it in [HTTP] CAFile"}},
		{"wrong CA file", otherFile, []string{"not trusted", "[HTTP] CAFile " + otherFile, "put the CA that signed it in that file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := New(Options{Settings: filled(Settings{URL: c.srv.URL + "/presence?key=q-secret", CAFile: tc.caFile, Headers: map[string]secret.Value{"Authorization": "Bearer tok-123"}})})
			if err != nil {
				t.Fatal(err)
			}
			err = tg.Send(context.Background(), []delivery.Item{item("a@x", 1)})[0]
			if err == nil || !errors.Is(err, delivery.ErrTargetDown) {
				t.Fatalf("err = %v, want a retryable target-down error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "tok-123") || strings.Contains(err.Error(), "q-secret") {
				t.Errorf("a secret reached the error: %v", err)
			}
			if len(c.received()) != 0 {
				t.Error("the CTI got a document over an untrusted connection")
			}
		})
	}
}

// filled gives s the defaults of the settings it leaves out.
func filled(s Settings) Settings {
	d := DefaultSettings()
	if s.Timeout == 0 {
		s.Timeout = d.Timeout
	}
	if s.Concurrency == 0 {
		s.Concurrency = d.Concurrency
	}
	return s
}

// dispatchSettings are the dispatcher's defaults without re-assertion and
// probes, which these tests do not look at.
func dispatchSettings() delivery.Settings {
	s := delivery.DefaultSettings()
	s.ReassertRate, s.ProbeInterval = 0, 0
	return s
}

func TestOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"settings not from DefaultSettings", Options{Settings: Settings{URL: "https://cti.example"}}, "incomplete Settings"},
		{"missing CA file", Options{Settings: filled(Settings{URL: "https://cti.example", CAFile: filepath.Join(t.TempDir(), "none.pem")})}, "[HTTP] CAFile"},
		{"certificate without key", Options{Settings: filled(Settings{URL: "https://cti.example", ClientCertFile: "client.pem"})}, "[HTTP] ClientCertFile/ClientKeyFile"},
	}
	for _, tc := range cases {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestClientCertificate(t *testing.T) {
	ca := testkit.NewCA(t, pki.Options{CommonName: "client CA"})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := testkit.Issue(t, ca, pki.Options{CommonName: "presencebridge", Client: true}).WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	c := newCTI(t, ca.Pool())

	without, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile})})
	if err := without.Send(context.Background(), []delivery.Item{item("a@x", 1)})[0]; err == nil {
		t.Fatal("a CTI that requires a client certificate accepted a request without one")
	}
	with, err := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile, ClientCertFile: certFile, ClientKeyFile: keyFile})})
	if err != nil {
		t.Fatal(err)
	}
	if err := with.Send(context.Background(), []delivery.Item{item("a@x", 1)})[0]; err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
}

func TestStatusClasses(t *testing.T) {
	c := newCTI(t, nil)
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile})})
	quick, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile, Timeout: 100 * time.Millisecond})})
	hang := make(chan struct{})
	defer close(hang) // before the server's Close, which waits for handlers
	cases := []struct {
		name      string
		reply     func(w http.ResponseWriter) bool
		permanent bool
		down      bool
	}{
		{"204", func(w http.ResponseWriter) bool { w.WriteHeader(204); return true }, false, false},
		{"500", func(w http.ResponseWriter) bool { w.WriteHeader(500); return true }, false, true},
		{"503", func(w http.ResponseWriter) bool { w.WriteHeader(503); return true }, false, true},
		{"408", func(w http.ResponseWriter) bool { w.WriteHeader(408); return true }, false, false},
		{"429", func(w http.ResponseWriter) bool { w.WriteHeader(429); return true }, false, false},
		{"401", func(w http.ResponseWriter) bool { w.WriteHeader(401); return true }, false, false},
		{"400", func(w http.ResponseWriter) bool { http.Error(w, "unknown\nextension", 400); return true }, true, false},
		{"404", func(w http.ResponseWriter) bool { w.WriteHeader(404); return true }, true, false},
		{"timeout", func(w http.ResponseWriter) bool { <-hang; return true }, false, true},
	}
	for _, tc := range cases {
		c.setReply(tc.reply)
		tg := tg
		if tc.name == "timeout" {
			tg = quick
		}
		err := tg.Send(context.Background(), []delivery.Item{item("a@x", 1)})[0]
		if tc.name == "204" {
			if err != nil {
				t.Errorf("204: %v", err)
			}
			continue
		}
		var perm *delivery.PermanentError
		if err == nil || errors.As(err, &perm) != tc.permanent || errors.Is(err, delivery.ErrTargetDown) != tc.down {
			t.Errorf("%s: err = %v, want permanent=%v down=%v", tc.name, err, tc.permanent, tc.down)
		}
		if tc.name == "400" && err != nil && !strings.Contains(err.Error(), "400 Bad Request: unknown extension") {
			t.Errorf("400: the error should carry the body excerpt: %v", err)
		}
	}
}

func TestBatchBody(t *testing.T) {
	c := newCTI(t, nil)
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile, Batch: true})})
	var items []delivery.Item
	for i := range 5 {
		items = append(items, item(fmt.Sprintf("u%d@x", i), uint64(i+1)))
	}
	for _, err := range tg.Send(context.Background(), items) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(c.hdrs) != 1 || len(c.received()) != 5 {
		t.Fatalf("%d requests carrying %d documents, want 1 carrying 5", len(c.hdrs), len(c.received()))
	}
}

// Through the dispatcher: a CTI that answers 500 twice and then 200 gets the state.
func TestRetriedThroughDispatcher(t *testing.T) {
	c := newCTI(t, nil)
	var fails atomic.Int32
	fails.Store(2)
	c.setReply(func(w http.ResponseWriter) bool {
		if fails.Add(-1) >= 0 {
			w.WriteHeader(500)
			return true
		}
		return false
	})
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile})})
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	clk := clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC))
	d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}, Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Enqueue(ctx, []delivery.Item{item("a@x", 0)})
	for deadline := time.Now().Add(10 * time.Second); d.Pending("http") > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not delivered")
		}
	}
	if got := c.received(); len(got) != 1 || got[0].UPN != "a@x" {
		t.Fatalf("received %+v", got)
	}
	if sl := clk.Sleeps(); len(sl) < 2 || sl[0] < 800*time.Millisecond || sl[1] < 1600*time.Millisecond {
		t.Errorf("back-off sleeps %v, want about 1 s then 2 s", sl)
	}
}

// Through the dispatcher: a CTI that does not answer the first POST within
// [HTTP] Timeout gets the state again, and the retry is accepted.
func TestTimeoutRetriedThroughDispatcher(t *testing.T) {
	c := newCTI(t, nil)
	hang := make(chan struct{})
	var calls atomic.Int32
	c.setReply(func(w http.ResponseWriter) bool {
		if calls.Add(1) == 1 {
			<-hang
			return true
		}
		return false
	})
	defer close(hang) // before the server's Close, which waits for handlers
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile, Timeout: 100 * time.Millisecond})})
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logs testkit.Buffer
	clk := clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC))
	d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}, Clock: clk, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Enqueue(ctx, []delivery.Item{item("a@x", 0)})
	for deadline := time.Now().Add(10 * time.Second); d.Pending("http") > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not delivered after the timeout")
		}
	}
	if got := c.received(); len(got) != 1 || got[0].UPN != "a@x" || calls.Load() != 2 {
		t.Fatalf("received %+v in %d requests, want a@x on the second", got, calls.Load())
	}
	if !strings.Contains(logs.String(), "no answer within 100ms ([HTTP] Timeout)") {
		t.Errorf("the log should say the CTI did not answer in time:\n%s", logs.String())
	}
}

// Neither the header values nor a token in the URL's query reach the logs or the
// status, however the CTI fails.
func TestSecretsStayOutOfLogsAndStatus(t *testing.T) {
	c := newCTI(t, nil)
	c.setReply(func(w http.ResponseWriter) bool { w.WriteHeader(503); return true })
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL + "/presence?key=q-secret", CAFile: c.caFile, Headers: map[string]secret.Value{"Authorization": "Bearer tok-123", "X-Api-Key": "k-456"}})})
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var logs testkit.Buffer
	clk := clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC))
	d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}, Clock: clk, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	d.Enqueue(ctx, []delivery.Item{item("a@x", 0)})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "target down"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the target was never reported down")
		}
	}
	c.setReply(func(w http.ResponseWriter) bool { http.Error(w, "no such extension", 422); return true })
	d.Enqueue(ctx, []delivery.Item{item("a@x", 0)})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "refused"); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the refusal was never logged")
		}
	}
	cancel()
	<-done
	st, _ := json.Marshal(d.Status())
	for _, secret := range []string{"tok-123", "k-456", "q-secret"} {
		if strings.Contains(logs.String(), secret) || strings.Contains(string(st), secret) {
			t.Errorf("%s reached the logs or the status:\n%s\n%s", secret, logs.String(), st)
		}
	}
	if !strings.Contains(logs.String(), "503") || !strings.Contains(logs.String(), "no such extension") {
		t.Errorf("the logs should say what the CTI answered:\n%s", logs.String())
	}
}

// A stop while requests are in flight lets them finish and records them as
// accepted, starts no new ones, and after a restart sends only the rest: no
// duplicates (before, every stop abandoned [HTTP] Concurrency requests the CTI
// then received twice).
func TestStopFinishesRequestsInFlight(t *testing.T) {
	c := newCTI(t, nil)
	var inFlight, started atomic.Int32
	release := make(chan struct{})
	c.setReply(func(w http.ResponseWriter) bool {
		started.Add(1)
		inFlight.Add(1)
		<-release
		inFlight.Add(-1)
		return false // then the document is recorded and answered 204
	})
	const n, concurrency = 40, 4
	tg, _ := New(Options{Settings: filled(Settings{URL: c.srv.URL, CAFile: c.caFile, Concurrency: concurrency})})
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	items := make([]delivery.Item, n)
	for i := range items {
		items[i] = item(fmt.Sprintf("u%02d@x", i), 0)
	}
	run := func() (stop func()) {
		d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}, Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		if items != nil {
			d.Enqueue(ctx, items)
			items = nil
		}
		return func() { cancel(); <-done }
	}
	stop := run()
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < concurrency; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests in flight, want %d", inFlight.Load(), concurrency)
		}
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond) // the stop is under way while the CTI holds its answers
	close(release)
	<-stopped
	if got := len(c.received()); got != concurrency || started.Load() != concurrency {
		t.Fatalf("the CTI took %d documents in %d requests at the stop, want the %d in flight and no new ones", got, started.Load(), concurrency)
	}
	d := delivery.NewDispatcher(delivery.Options{Settings: dispatchSettings(), Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{tg}})
	if p := d.Pending("http"); p != n-concurrency {
		t.Fatalf("%d states pending after the stop, want %d (the ones in flight were accepted)", p, n-concurrency)
	}

	stop = run()
	defer stop()
	for deadline := time.Now().Add(10 * time.Second); len(c.received()) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d documents after the restart", len(c.received()), n)
		}
	}
	time.Sleep(50 * time.Millisecond)
	seen := map[string]int{}
	for _, d := range c.received() {
		seen[d.UPN]++
	}
	if len(seen) != n || len(c.received()) != n {
		t.Errorf("%d documents for %d users, want each of %d once", len(c.received()), len(seen), n)
	}
}
