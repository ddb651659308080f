package asterisk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Fakes for what the real Asterisk cannot be made to do on cue: a manager
// interface that stops half-way through its greeting, answers out of order
// or drops the connection, and an ARI that never answers or answers what a
// misconfigured Asterisk would. All over real loopback sockets.

// fakeAMI is a manager interface on loopback.
type fakeAMI struct {
	ln       net.Listener
	greeting string // sent on connect, as is ("" : the usual one)
	secret   string
	// hold, when set, is called for every action before it is answered; it
	// may block (a hung Asterisk) or return false to drop the connection.
	hold func(action amiMessage) bool
	// reverse answers every two actions in reverse order.
	reverse bool

	mu      sync.Mutex
	conns   int
	logins  int
	actions []amiMessage
	vars    map[string]string
	open    []net.Conn
}

func startFakeAMI(t *testing.T, f *fakeAMI) *fakeAMI {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln, f.vars = ln, map[string]string{}
	if f.secret == "" {
		f.secret = "ami-secret"
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			f.open = append(f.open, c)
			f.mu.Unlock()
			go f.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.dropAll()
	})
	return f
}

func (f *fakeAMI) settings() Settings {
	s := DefaultSettings()
	s.Mode, s.Address, s.Username, s.Secret, s.Timeout = ModeAMI, f.ln.Addr().String(), "pb", "ami-secret", 300*time.Millisecond
	return s
}

// dropAll closes every connection (Asterisk restarting).
func (f *fakeAMI) dropAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.open {
		c.Close()
	}
	f.open = nil
}

func (f *fakeAMI) count() (conns, logins int, actions []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.actions {
		actions = append(actions, a["action"])
	}
	return f.conns, f.logins, actions
}

func (f *fakeAMI) serve(c net.Conn) {
	defer c.Close()
	greeting := f.greeting
	if greeting == "" {
		greeting = "Asterisk Call Manager/11.0.0\r\n"
	}
	if _, err := c.Write([]byte(greeting)); err != nil || !strings.HasSuffix(greeting, "\n") {
		<-make(chan struct{}) // a greeting cut short: hang until closed
	}
	r := bufio.NewReader(c)
	var held []amiMessage
	for {
		m, err := readMessage(r)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.actions = append(f.actions, m)
		f.mu.Unlock()
		if m["action"] != "Login" && f.hold != nil && !f.hold(m) {
			return
		}
		if f.reverse && m["action"] != "Login" {
			if held = append(held, m); len(held) < 2 {
				continue
			}
			for i := len(held) - 1; i >= 0; i-- {
				c.Write([]byte(f.answer(held[i])))
			}
			held = nil
			continue
		}
		if _, err := c.Write([]byte(f.answer(m))); err != nil {
			return
		}
	}
}

// answer is what Asterisk 22 answers (checked against the real one).
func (f *fakeAMI) answer(m amiMessage) string {
	id := "ActionID: " + m["actionid"] + "\r\n"
	f.mu.Lock()
	defer f.mu.Unlock()
	switch m["action"] {
	case "Login":
		if m["username"] != "pb" || m["secret"] != f.secret {
			return "Response: Error\r\n" + id + "Message: Authentication failed\r\n\r\n"
		}
		f.logins++
		return "Response: Success\r\n" + id + "Message: Authentication accepted\r\n\r\n" +
			"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
	case "Setvar":
		f.vars[m["variable"]] = m["value"]
		return "Response: Success\r\n" + id + "Message: Variable Set\r\n\r\n"
	case "Getvar":
		v, ok := f.vars[m["variable"]]
		if !ok {
			v = "UNKNOWN"
		}
		return "Response: Success\r\n" + id + "Variable: " + m["variable"] + "\r\nValue: " + v + "\r\n\r\n"
	case "Ping":
		return "Response: Success\r\n" + id + "Ping: Pong\r\nTimestamp: 1795910717.795509\r\n\r\n"
	}
	return "Response: Error\r\n" + id + "Message: Invalid/unknown command\r\n\r\n"
}

func fakeUser(ext string) users.User {
	return users.User{UPN: "u" + ext + "@contoso.test", SIPURI: "sip:" + ext + "@pbx.example", Extension: ext}
}

func fakeItems(n int) []delivery.Item {
	items := make([]delivery.Item, n)
	for i := range items {
		st := presence.State{Availability: presence.Busy, Activity: presence.ActInACall}
		items[i] = delivery.Item{User: fakeUser(fmt.Sprint(2000 + i)), State: st, Mapped: presence.DefaultMapping().Map(st), Reason: delivery.ReasonChange}
	}
	return items
}

// A manager interface that sends half its greeting and stops: the login gives
// up after Timeout and says what came, the target is down, and the rest of a
// batch does not wait a Timeout each (one connection for all of it).
func TestAMIHalfGreeting(t *testing.T) {
	f := startFakeAMI(t, &fakeAMI{greeting: "Asterisk Call Man"})
	tg := newTarget(t, f.settings())
	errs := tg.Send(context.Background(), fakeItems(20))
	for i, err := range errs {
		if !errors.Is(err, delivery.ErrTargetDown) || !strings.Contains(err.Error(), "no greeting") ||
			!strings.Contains(err.Error(), `"Asterisk Call Man"`) || !strings.Contains(err.Error(), "5038") {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if conns, _, _ := f.count(); conns != 1 {
		t.Errorf("%d connections for one batch, want 1: the other items wait for the first login", conns)
	}
}

// Something else on the AMI port (here an HTTP greeting) is named as such.
func TestAMINotAManager(t *testing.T) {
	f := startFakeAMI(t, &fakeAMI{greeting: "SSH-2.0-OpenSSH_9.2\r\n"})
	errs := newTarget(t, f.settings()).Send(context.Background(), fakeItems(1))
	if !errors.Is(errs[0], delivery.ErrTargetDown) || !strings.Contains(errs[0].Error(), `not Asterisk's manager interface (it greets with "SSH-2.0-OpenSSH_9.2")`) {
		t.Errorf("err = %v", errs[0])
	}
}

// Actions in flight together on the one session get their own answers, in
// whatever order Asterisk sends them (matched by ActionID).
func TestAMIAnswersMatchedByActionID(t *testing.T) {
	f := startFakeAMI(t, &fakeAMI{})
	tg := newTarget(t, f.settings())
	a, b := fakeUser("3000"), fakeUser("3001")
	ctx := context.Background()
	send(t, tg, item(a, presence.Busy, presence.ActInACall))
	send(t, tg, item(b, presence.DoNotDisturb, presence.ActDoNotDisturb))
	f.mu.Lock()
	f.reverse = true
	f.mu.Unlock()
	var wg sync.WaitGroup
	got := map[string]string{}
	var mu sync.Mutex
	for _, u := range []users.User{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, st, err := tg.Lookup(ctx, u)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			got[u.Extension] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got["3000"] != "INUSE" || got["3001"] != "BUSY" {
		t.Errorf("lookups answered in reverse order: %v, want 3000 INUSE and 3001 BUSY", got)
	}
	if _, logins, _ := f.count(); logins != 1 {
		t.Errorf("%d logins, want one session for everything", logins)
	}
}

// A session whose connection breaks is made again at once by Run, and
// actions in flight when it broke fail as target down.
func TestAMIReconnects(t *testing.T) {
	var drop atomic.Bool
	f := &fakeAMI{}
	f.hold = func(m amiMessage) bool { return !(drop.Load() && m["action"] == "Setvar") }
	startFakeAMI(t, f)
	var logs testkit.Buffer
	tg, err := New(Options{Settings: f.settings(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	until(t, "the first login", func() bool { _, logins, _ := f.count(); return logins == 1 })

	drop.Store(true)
	errs := tg.Send(ctx, fakeItems(1))
	if !errors.Is(errs[0], delivery.ErrTargetDown) || !strings.Contains(errs[0].Error(), "connection broke") {
		t.Errorf("Setvar on a connection that broke: %v", errs[0])
	}
	until(t, "a second login after the break", func() bool { _, logins, _ := f.count(); return logins == 2 })
	drop.Store(false)
	if errs := tg.Send(ctx, fakeItems(1)); errs[0] != nil {
		t.Errorf("Setvar on the new session: %v", errs[0])
	}
	f.dropAll() // Asterisk restarted
	until(t, "a third login after the restart", func() bool { _, logins, _ := f.count(); return logins == 3 })
	if !strings.Contains(logs.String(), "AMI connection lost") {
		t.Errorf("the loss is not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "ami-secret") {
		t.Errorf("the log shows the secret:\n%s", logs.String())
	}
}

// Run pings a quiet session every KeepAlive, and after a refused login tries
// again with a growing wait.
func TestAMIKeepAliveAndBackoff(t *testing.T) {
	t.Run("keepalive", func(t *testing.T) {
		f := startFakeAMI(t, &fakeAMI{})
		clk := clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC))
		tg, err := New(Options{Settings: f.settings(), Clock: clk, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { tg.Run(ctx); close(done) }()
		until(t, "three pings", func() bool {
			_, _, actions := f.count()
			n := 0
			for _, a := range actions {
				if a == "Ping" {
					n++
				}
			}
			return n >= 3
		})
		cancel()
		<-done
		for _, d := range clk.Sleeps() {
			if d != DefaultKeepAlive {
				t.Fatalf("waits between pings %v, want %s each", clk.Sleeps(), DefaultKeepAlive)
			}
		}
	})
	t.Run("backoff", func(t *testing.T) {
		f := startFakeAMI(t, &fakeAMI{secret: "another"})
		clk := clock.NewFake(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC))
		var logs testkit.Buffer
		tg, err := New(Options{Settings: f.settings(), Clock: clk, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { tg.Run(ctx); close(done) }()
		until(t, "five login attempts", func() bool { conns, _, _ := f.count(); return conns >= 5 })
		cancel()
		<-done
		sl := clk.Sleeps()
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
			if i >= len(sl) || sl[i] < want*8/10 || sl[i] > want*12/10 {
				t.Fatalf("waits between logins %v, want 1s, 2s, 4s, 8s (±20%%)", sl)
			}
		}
		if n := strings.Count(logs.String(), "refused the login"); n != 1 {
			t.Errorf("the refused login is logged %d times, want once:\n%s", n, logs.String())
		}
	})
}

// A hung ARI (it takes the connection and never answers): a request gives up
// after Timeout with the key to change, the target is down, and a batch does
// not start more requests once one found it down.
func TestARIHung(t *testing.T) {
	var started atomic.Int32
	release := make(chan struct{})
	srv := fakeARI(t, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release
	})
	defer close(release)
	s := DefaultSettings()
	s.URL, s.Username, s.Password, s.Timeout = srv+"/ari", "pb", "ari-pass", 200*time.Millisecond
	tg := newTarget(t, s)
	errs := tg.Send(context.Background(), fakeItems(40))
	for i, err := range errs {
		if !errors.Is(err, delivery.ErrTargetDown) || !strings.Contains(err.Error(), "no answer within 200ms ([Asterisk] Timeout)") {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if n := started.Load(); n > int32(s.Concurrency) {
		t.Errorf("%d requests started for a batch of 40 against a hung ARI, want at most Concurrency (%d)", n, s.Concurrency)
	}
	if err := tg.Probe(context.Background()); !errors.Is(err, delivery.ErrTargetDown) {
		t.Errorf("Probe of a hung ARI: %v", err)
	}
}

// fakeARI serves h on loopback and returns its base URL.
func fakeARI(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// ARI's refusals, as the real one words them, each with its fix: what holds
// for every user marks the target down, what holds for one state or device is
// refused for good.
func TestARIRefusals(t *testing.T) {
	for _, c := range []struct {
		name      string
		status    int
		body      string
		down      bool
		permanent bool
		want      string
	}{
		{"wrong password", 401, `{"message":"Authentication required"}`, true, false, "check [Asterisk] Username and Password against the user in ari.conf"},
		{"read only", 403, `{"message":"Forbidden"}`, true, false, "read_only = no"},
		{"not ARI", 404, "<html><title>404 Not Found</title></html>", true, false, "set [Asterisk] URL to ARI's base, e.g. http://pbx.example.com:8088/ari"},
		{"uncontrolled", 409, `{"message":"Uncontrolled device specified"}`, false, true, "named Stasis:<name>"},
		{"unknown state", 500, `{"message":"Unknown device"}`, false, true, "device state column"},
		{"shutting down", 503, "<html>Shutdown in progress</html>", true, false, "503"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := fakeARI(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			})
			s := DefaultSettings()
			s.URL, s.Username, s.Password = srv+"/ari", "pb", "ari-pass"
			err := newTarget(t, s).Send(context.Background(), fakeItems(1))[0]
			var perm *delivery.PermanentError
			if errors.Is(err, delivery.ErrTargetDown) != c.down || errors.As(err, &perm) != c.permanent || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want down %v, permanent %v, with %q", err, c.down, c.permanent, c.want)
			}
			var ae *Error
			if !errors.As(err, &ae) || !strings.HasPrefix(ae.Op, "PUT "+srv+"/ari/deviceStates/Stasis:teams-2000") {
				t.Errorf("err = %#v, want an *Error naming the request", err)
			}
			if strings.Contains(err.Error(), "ari-pass") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// What ARI is sent: PUT of the Stasis: device with the state and basic auth;
// a departed user's device set UNAVAILABLE, then deleted.
func TestARIRequests(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := fakeARI(t, func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+user+":"+pass)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	s := DefaultSettings()
	s.URL, s.Username, s.Password, s.Device = srv+"/ari/", "pb", "ari-pass", "teams-{user}"
	tg := newTarget(t, s)
	u := fakeUser("4000")
	u.SIPURI = "sip:anna.b@pbx.example"
	send(t, tg, item(u, presence.Busy, presence.ActInAMeeting))
	send(t, tg, removal(u))
	want := []string{
		"PUT /ari/deviceStates/Stasis:teams-anna.b?deviceState=INUSE pb:ari-pass",
		"PUT /ari/deviceStates/Stasis:teams-anna.b?deviceState=UNAVAILABLE pb:ari-pass",
		"DELETE /ari/deviceStates/Stasis:teams-anna.b pb:ari-pass",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
