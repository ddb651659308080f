package asterisk

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
)

func start(t *testing.T, o Options) *Server {
	t.Helper()
	needAsterisk(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// watch subscribes the independent watcher (no authentication: the Watcher
// endpoint) to ext's hint.
func watch(t *testing.T, ctx context.Context, s *Server, ext, event string) *kamailio.Watcher {
	t.Helper()
	w, err := kamailio.WatchEvent(ctx, s.SIPAddr, s.URI(ext), event)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.LogTail(20))
	}
	t.Cleanup(w.Close)
	return w
}

func confirmed(n kamailio.Notify) bool { return n.Confirmed() }

// idle is a dialog-info NOTIFY of a hint with no call: its one dialog terminated.
func idle(n kamailio.Notify) bool { return slices.Equal(n.DialogStates, []string{"terminated"}) }

func early(n kamailio.Notify) bool { return slices.Contains(n.DialogStates, "early") }

// waitFor is WaitFor that ends the test with the dialog states seen and the log.
func waitFor(t *testing.T, ctx context.Context, s *Server, w *kamailio.Watcher, what string, match func(kamailio.Notify) bool) kamailio.Notify {
	t.Helper()
	var seen [][]string
	n, err := w.WaitFor(ctx, func(n kamailio.Notify) bool {
		seen = append(seen, n.DialogStates)
		return match(n)
	})
	if err != nil {
		t.Fatalf("no NOTIFY %s: %v; dialog states seen: %v\n%s", what, err, seen, s.LogTail(30))
	}
	return n
}

// group lists the processes (from /proc) in the process group pgid: the
// harness starts Asterisk as the leader of a group of its own.
func group(pgid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []string
	for _, p := range stats {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue // ended meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(raw), ')')
		if f := strings.Fields(string(raw[i+1:])); i > 0 && len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, strings.Fields(string(raw))[0])
		}
	}
	return pids
}

// ariGet GETs path below the ARI URL as user/password and returns the status
// and body.
func ariGet(t *testing.T, ctx context.Context, s *Server, path, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.ARIURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestIntegrationStartStop(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(s.Users) != 2 || s.Users["1000"] == "" || s.Users["1001"] == "" || s.Users["1000"] == s.Users["1001"] {
		t.Errorf("default users = %d, want 1000 and 1001 with passwords of their own", len(s.Users))
	}
	if s.Subscriber != "presencebridge" || s.SubscriberPassword == "" || s.ARIUser == "" || s.ARIPassword == "" ||
		s.AMIUser == "" || s.AMIPassword == "" || s.Domain != "pbx.example" {
		t.Errorf("defaults not filled in: subscriber %q, ARI user %q, AMI user %q, domain %q", s.Subscriber, s.ARIUser, s.AMIUser, s.Domain)
	}
	out, err := s.CLI(ctx, "core show hints")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1000@phones", "PJSIP/1000&Stasis:teams-1000&Custom:teams-1000", "1001@phones", "2 hints registered"} {
		if !strings.Contains(out, want) {
			t.Errorf("core show hints lacks %q:\n%s", want, out)
		}
	}
	if status, body := ariGet(t, ctx, s, "/asterisk/info", s.ARIUser, s.ARIPassword); status != 200 || !strings.Contains(body, Version) {
		t.Errorf("ARI GET /asterisk/info as %s: %d %.200s; want 200 naming %s", s.ARIUser, status, body, Version)
	}
	if status, _ := ariGet(t, ctx, s, "/asterisk/info", s.ARIUser, "wrong"); status != 401 {
		t.Errorf("ARI with a wrong password: %d, want 401", status)
	}
	pid := s.PID()
	if running := group(pid); !slices.Contains(running, strconv.Itoa(pid)) {
		t.Fatalf("Asterisk (PID %d) is not the leader of its process group: group %v", pid, running)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if left := group(pid); len(left) > 0 {
		t.Errorf("processes of Asterisk's group (PID %d) still there after Stop: %v", pid, left)
	}
	// Its ports are free again.
	if u, err := net.ListenPacket("udp", s.SIPAddr); err != nil {
		t.Errorf("SIP port still taken after Stop: %v", err)
	} else {
		u.Close()
	}
	for _, addr := range []string{strings.TrimSuffix(strings.TrimPrefix(s.ARIURL, "http://"), "/ari"), s.AMIAddr} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Errorf("%s still taken after Stop: %v", addr, err)
		} else {
			l.Close()
		}
	}
}

// A watcher of a hint sees it busy while ARI or AMI says the user's device is
// in use, and idle again after; wrong credentials are refused.
func TestIntegrationDeviceStates(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	t.Run("ARI", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := watch(t, ctx, s, "1000", "dialog")
		waitFor(t, ctx, s, w, "idle before any device state", idle)
		pw := watch(t, ctx, s, "1000", "presence")
		for _, step := range []struct {
			state string
			match func(kamailio.Notify) bool
		}{{"INUSE", confirmed}, {"NOT_INUSE", idle}, {"BUSY", confirmed}, {"NOT_INUSE", idle}} {
			if err := s.SetDeviceState(ctx, "teams-1000", step.state); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, s, w, "after deviceState="+step.state, step.match)
		}
		// The presence watcher saw the same: on the phone while in use.
		n, err := pw.WaitFor(ctx, func(n kamailio.Notify) bool { return slices.Contains(n.Activities, "on-the-phone") })
		if err != nil {
			t.Errorf("presence watcher: %v", err)
		} else if n.Basic != "open" {
			t.Errorf("presence while in use: basic %q, want open", n.Basic)
		}
		status, body := ariGet(t, ctx, s, "/deviceStates/Stasis:teams-1000", s.ARIUser, s.ARIPassword)
		if status != 200 || !strings.Contains(body, `"NOT_INUSE"`) {
			t.Errorf("GET deviceStates/Stasis:teams-1000: %d %s; want NOT_INUSE", status, body)
		}
	})
	t.Run("AMI", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := watch(t, ctx, s, "1001", "dialog")
		waitFor(t, ctx, s, w, "idle before any device state", idle)
		ami := amiLogin(t, s, s.AMIUser, s.AMIPassword)
		for _, step := range []struct {
			state string
			match func(kamailio.Notify) bool
		}{{"BUSY", confirmed}, {"NOT_INUSE", idle}} {
			res := ami.action(t, "Setvar", "Variable: DEVICE_STATE(Custom:teams-1001)", "Value: "+step.state)
			if !strings.Contains(res, "Response: Success") {
				t.Fatalf("Setvar DEVICE_STATE(Custom:teams-1001)=%s: %s", step.state, res)
			}
			waitFor(t, ctx, s, w, "after Custom:teams-1001="+step.state, step.match)
		}
	})
	t.Run("AMI wrong secret", func(t *testing.T) {
		conn, banner := amiDial(t, s)
		defer conn.Close()
		if !strings.HasPrefix(banner, "Asterisk Call Manager/") {
			t.Errorf("AMI banner %q", banner)
		}
		res := conn.action(t, "Login", "Username: "+s.AMIUser, "Secret: wrong")
		if !strings.Contains(res, "Response: Error") || !strings.Contains(res, "Authentication failed") {
			t.Errorf("AMI login with a wrong secret answered:\n%s", res)
		}
	})
}

// Two registered phones call each other through Asterisk: the callee's hint
// goes early (ringing), confirmed (answered) and back to idle after the BYE;
// presencebridge's own endpoint may SUBSCRIBE only with digest auth.
func TestIntegrationCall(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	caller, callee := newPhone(t, s, "1000", s.Users["1000"]), newPhone(t, s, "1001", s.Users["1001"])
	for _, p := range []*phone{caller, callee} {
		if err := p.register(); err != nil {
			t.Fatalf("%v\n%s", err, s.LogTail(20))
		}
	}
	w := watch(t, ctx, s, "1001", "dialog")
	waitFor(t, ctx, s, w, "idle while registered", idle)
	wc := watch(t, ctx, s, "1000", "dialog")
	waitFor(t, ctx, s, wc, "caller idle while registered", idle)

	type dialed struct {
		c   *call
		err error
	}
	done := make(chan dialed, 1)
	go func() { c, err := caller.dial("1001"); done <- dialed{c, err} }()
	invite, err := callee.next("INVITE")
	if err != nil {
		t.Fatalf("%v\n%s", err, s.LogTail(30))
	}
	if from := header(invite, "From"); !strings.Contains(from, "1000") {
		t.Errorf("INVITE to the callee is from %q, want the caller's number 1000", from)
	}
	tag := token()
	callee.reply(invite, 180, "Ringing", tag, "")
	waitFor(t, ctx, s, w, "early while the callee rings", early)
	callee.reply(invite, 200, "OK", tag, callee.sdp())
	d := <-done
	if d.err != nil {
		t.Fatalf("%v\n%s", d.err, s.LogTail(30))
	}
	if _, err := callee.next("ACK"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, s, w, "confirmed once the callee answered", confirmed)
	waitFor(t, ctx, s, wc, "confirmed for the caller too", confirmed)
	if err := d.c.hangUp(); err != nil {
		t.Fatal(err)
	}
	bye, err := callee.next("BYE")
	if err != nil {
		t.Fatal(err)
	}
	callee.reply(bye, 200, "OK", "", "")
	waitFor(t, ctx, s, w, "idle after the BYE", idle)

	t.Run("subscriber needs digest", func(t *testing.T) {
		pb := newPhone(t, s, s.Subscriber, s.SubscriberPassword)
		r := &request{method: "SUBSCRIBE", uri: s.URI("1000"), to: s.URI("1000"), fromTag: token(), callID: token(), cseq: 1,
			headers: []string{"Event: dialog", "Accept: application/dialog-info+xml", "Expires: 60"}}
		res, err := pb.exchange(pb.build(*r, "z9hG4bK"+token(), ""), 1, "SUBSCRIBE")
		if err != nil || code(res) != 401 {
			t.Fatalf("SUBSCRIBE as %s without credentials: %q, %v; want 401", s.Subscriber, firstLine(res), err)
		}
		res, err = pb.do(r)
		if err != nil || code(res) != 200 {
			t.Fatalf("SUBSCRIBE as %s with digest: %q, %v; want 200", s.Subscriber, firstLine(res), err)
		}
		notify, err := pb.next("NOTIFY")
		if err != nil {
			t.Fatal(err)
		}
		pb.reply(notify, 200, "OK", "", "")
		if !strings.Contains(notify, "<state>terminated</state>") || header(notify, "Event") != "dialog" {
			t.Errorf("NOTIFY to %s:\n%s", s.Subscriber, notify)
		}
	})
}

// Restart keeps the ports and astdb: device states set before it are there
// after it. Dir is too long for a Unix socket path here, so the control socket
// lives in a folder of its own, which Stop removes.
func TestIntegrationRestart(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	s := start(t, Options{Dir: dir})
	if !s.shortRun || len(filepath.Join(s.run, "asterisk.ctl")) > maxSocketPath {
		t.Errorf("control socket folder %s for a %d-byte Dir", s.run, len(dir))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.SetDeviceState(ctx, "teams-1000", "BUSY"); err != nil {
		t.Fatal(err)
	}
	ami := amiLogin(t, s, s.AMIUser, s.AMIPassword)
	if res := ami.action(t, "Setvar", "Variable: DEVICE_STATE(Custom:teams-1001)", "Value: INUSE"); !strings.Contains(res, "Response: Success") {
		t.Fatalf("Setvar: %s", res)
	}
	ami.Close()
	oldPID, oldRun := s.PID(), s.run
	r, err := s.Restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	if left := group(oldPID); len(left) > 0 {
		t.Errorf("processes of the first Asterisk's group (PID %d) still there after Restart: %v", oldPID, left)
	}
	if _, err := os.Stat(oldRun); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the first control socket folder %s is still there: %v", oldRun, err)
	}
	if r.SIPAddr != s.SIPAddr || r.ARIURL != s.ARIURL || r.AMIAddr != s.AMIAddr || r.ARIPassword != s.ARIPassword {
		t.Errorf("after Restart: SIP %s ARI %s AMI %s; before: %s %s %s", r.SIPAddr, r.ARIURL, r.AMIAddr, s.SIPAddr, s.ARIURL, s.AMIAddr)
	}
	status, body := ariGet(t, ctx, r, "/deviceStates", r.ARIUser, r.ARIPassword)
	var states []struct{ Name, State string }
	if err := json.Unmarshal([]byte(body), &states); status != 200 || err != nil ||
		!slices.Contains(states, struct{ Name, State string }{"Stasis:teams-1000", "BUSY"}) {
		t.Errorf("GET /deviceStates after Restart: %d %s; want Stasis:teams-1000 BUSY", status, body)
	}
	for _, ext := range []string{"1000", "1001"} {
		w := watch(t, ctx, r, ext, "dialog")
		waitFor(t, ctx, r, w, "busy after Restart for "+ext, confirmed)
		w.Close() // while Asterisk still answers the unsubscribe
	}
	run := r.run
	r.Stop()
	if _, err := os.Stat(run); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket folder %s is still there after Stop: %v", run, err)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
		want string
	}{
		{"no dir", Options{}, "Options.Dir is required"},
		{"domain", Options{Dir: "x", Domain: `a"b`}, "not a host name"},
		{"extension", Options{Dir: "x", Users: map[string]string{"10 00": "pw"}}, `extension "10 00"`},
		{"extension is the watcher", Options{Dir: "x", Users: map[string]string{"watcher": "pw"}}, "also the name"},
		{"empty password", Options{Dir: "x", Users: map[string]string{"1000": ""}}, "password of extension 1000"},
		{"comment in password", Options{Dir: "x", Users: map[string]string{"1000": "a;b"}}, "password of extension 1000"},
		{"subscriber", Options{Dir: "x", Subscriber: "watcher"}, "Subscriber"},
		{"ARI user", Options{Dir: "x", ARIUser: "a b"}, "ARIUser"},
		{"AMI password", Options{Dir: "x", AMIPassword: "x\ny"}, "AMI password"},
		{"hint", Options{Dir: "x", Hint: "PJSIP/{ext}\nexten => 9,1,Hangup()"}, "Hint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.o.fill()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("fill() = %v; want an error with %q", err, c.want)
			}
			if err != nil && strings.Contains(c.name, "password") && strings.Contains(err.Error(), "a;b") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// amiConn is a manager interface connection: blocks of "Key: value" lines
// ending with an empty line.
type amiConn struct {
	net.Conn
	r  *bufio.Reader
	id int
}

func amiDial(t *testing.T, s *Server) (*amiConn, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.AMIAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &amiConn{Conn: conn, r: bufio.NewReader(conn)}
	banner, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("AMI banner: %v", err)
	}
	return c, strings.TrimSpace(banner)
}

func amiLogin(t *testing.T, s *Server, user, secret string) *amiConn {
	t.Helper()
	c, _ := amiDial(t, s)
	t.Cleanup(func() { c.Close() })
	if res := c.action(t, "Login", "Username: "+user, "Secret: "+secret); !strings.Contains(res, "Response: Success") {
		t.Fatalf("AMI login as %s: %s", user, res)
	}
	return c
}

// action sends one action and returns its response block (events in between
// are skipped: the response carries the ActionID).
func (c *amiConn) action(t *testing.T, name string, lines ...string) string {
	t.Helper()
	c.id++
	id := fmt.Sprintf("pb-%d", c.id)
	msg := "Action: " + name + "\r\nActionID: " + id + "\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	for {
		var block strings.Builder
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatalf("AMI %s: %v", name, err)
			}
			if strings.TrimSpace(line) == "" {
				break
			}
			block.WriteString(line)
		}
		if strings.Contains(block.String(), "ActionID: "+id+"\r\n") {
			return block.String()
		}
	}
}

// BenchmarkStartStop measures how long a test waits for Asterisk: Start until
// ready, and a clean Stop (astdb's sync thread sleeps up to 1 s between commits).
func BenchmarkStartStop(b *testing.B) {
	needAsterisk(b)
	var starting, stopping time.Duration
	for b.Loop() {
		t0 := time.Now()
		s, err := Start(context.Background(), Options{Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		s.Stop()
		starting, stopping = starting+t1.Sub(t0), stopping+time.Since(t1)
	}
	b.ReportMetric(float64(starting.Milliseconds())/float64(b.N), "ms-start/op")
	b.ReportMetric(float64(stopping.Milliseconds())/float64(b.N), "ms-stop/op")
}
