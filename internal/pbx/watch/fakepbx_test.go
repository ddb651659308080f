package watch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// fakePBX is a SIP peer on a loopback UDP socket, driven by the test: it hands
// over each request the watcher sends, answers what the test says, and sends
// NOTIFYs of the test's making. For what a real PBX does not do on cue: a
// garbled body, a NOTIFY nobody subscribed to, a 481 to a refresh, a 404.
type fakePBX struct {
	t    *testing.T
	conn net.PacketConn
	reqs chan *sip.Request
	ress chan *sip.Response
	seq  int
}

func startFake(t *testing.T) *fakePBX {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePBX{t: t, conn: conn, reqs: make(chan *sip.Request, 64), ress: make(chan *sip.Response, 64)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			switch m := msg.(type) {
			case *sip.Request:
				f.reqs <- m
			case *sip.Response:
				f.ress <- m
			}
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return f
}

func (f *fakePBX) addr() string { return f.conn.LocalAddr().String() }

// next is the next SUBSCRIBE the watcher sends.
func (f *fakePBX) next() *sip.Request {
	f.t.Helper()
	select {
	case r := <-f.reqs:
		return r
	case <-time.After(5 * time.Second):
		f.t.Fatal("no request from the watcher within 5 s")
		return nil
	}
}

// answer replies to req (a 2xx carries a To tag, a Contact and Expires).
func (f *fakePBX) answer(req *sip.Request, code int, reason string, headers ...string) {
	f.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if code < 300 {
		if to := res.To(); to != nil {
			to.Params.Remove("tag")
			to.Params.Add("tag", "pbx-tag") // the NOTIFYs' From tag: one dialog
		}
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: f.conn.LocalAddr().(*net.UDPAddr).Port}})
		if req.GetHeader("Expires") != nil {
			res.AppendHeader(sip.NewHeader("Expires", req.GetHeader("Expires").Value()))
		}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		res.AppendHeader(sip.NewHeader(headers[i], headers[i+1]))
	}
	f.send(res.String(), req)
}

// send writes raw to the watcher's Contact (from the SUBSCRIBE it answers).
func (f *fakePBX) send(raw string, sub *sip.Request) {
	f.t.Helper()
	c := sub.Contact()
	if c == nil {
		f.t.Fatalf("SUBSCRIBE without Contact:\n%s", sub)
	}
	dst := net.JoinHostPort(c.Address.Host, strconv.Itoa(c.Address.Port))
	to, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.conn.WriteTo([]byte(raw), to); err != nil {
		f.t.Fatal(err)
	}
}

// notify sends a NOTIFY in sub's dialog (callID overrides its Call-ID) and
// returns the status the watcher answered.
func (f *fakePBX) notify(sub *sip.Request, callID, state, ctype, body string) int {
	f.t.Helper()
	f.seq++
	if callID == "" {
		callID = sub.CallID().Value()
	}
	fromTag, _ := sub.From().Params.Get("tag")
	c := sub.Contact().Address
	local := f.addr()
	msg := fmt.Sprintf("NOTIFY %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKn%d;rport\r\nMax-Forwards: 70\r\n"+
		"From: <%s>;tag=pbx-tag\r\nTo: <%s>;tag=%s\r\nCall-ID: %s\r\nCSeq: %d NOTIFY\r\nContact: <sip:%s>\r\n"+
		"Event: %s\r\nSubscription-State: %s\r\n",
		c.String(), local, f.seq, sub.To().Address.String(), sub.From().Address.String(), fromTag, callID, f.seq, local,
		sub.GetHeader("Event").Value(), state)
	if body != "" {
		msg += "Content-Type: " + ctype + "\r\n"
	}
	msg += fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	f.send(msg, sub)
	select {
	case r := <-f.ress:
		return r.StatusCode
	case <-time.After(5 * time.Second):
		f.t.Fatal("no answer to the NOTIFY within 5 s")
		return 0
	}
}

// changes collects what the watcher hands on.
type changes struct {
	mu  sync.Mutex
	got []presence.PBXChange
	ch  chan struct{}
}

func (c *changes) take(_ context.Context, batch []presence.PBXChange) {
	c.mu.Lock()
	c.got = append(c.got, batch...)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until upn's latest change matches.
func (c *changes) waitFor(t *testing.T, upn string, match func(presence.PBXState) bool) presence.PBXState {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		for i := len(c.got) - 1; i >= 0; i-- {
			if c.got[i].User.UPN == upn {
				if st := c.got[i].Current; match(st) {
					c.mu.Unlock()
					return st
				}
				break
			}
		}
		c.mu.Unlock()
		select {
		case <-c.ch:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("no matching state of %s within 5 s; changes: %+v", upn, c.got)
		}
	}
}

func startWatcher(t *testing.T, server, watch string, list ...users.User) (*Watcher, *changes, *testkit.Buffer) {
	t.Helper()
	s := DefaultSettings()
	s.Watch, s.Rate = watch, 200
	return runWatcher(t, s, startSIPSettings(server), list...)
}

// startSIPSettings are [SIP]'s defaults toward server, with a short Timeout.
func startSIPSettings(server string) pbxsip.Settings {
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Timeout = server, 2*time.Second
	return sipS
}

// runWatcher starts a watcher of list on loopback with s and sipS, run until
// the test ends; its changes and its log are returned.
func runWatcher(t *testing.T, s Settings, sipS pbxsip.Settings, list ...users.User) (*Watcher, *changes, *testkit.Buffer) {
	t.Helper()
	logs := &testkit.Buffer{}
	got := &changes{ch: make(chan struct{}, 1)}
	s.Listen = "127.0.0.1:0"
	w, err := New(Options{Settings: s, SIP: sipS, Changes: got.take,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; w.Close() })
	w.SetUsers(list)
	return w, got, logs
}

const dialogBody = `<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="%d" state="full" entity="sip:1000@pbx.test">%s</dialog-info>`

func dialogs(version int, states ...string) string {
	var b strings.Builder
	for i, s := range states {
		fmt.Fprintf(&b, `<dialog id="d%d" call-id="c%d" direction="recipient"><state>%s</state></dialog>`, i, i, s)
	}
	return fmt.Sprintf(dialogBody, version, b.String())
}

var anna = users.User{UPN: "anna@contoso.test", SIPURI: "sip:1000@pbx.test", Account: "main"}

// A subscription is made, a confirmed dialog is a call, and its end is idle;
// a NOTIFY for a subscription nobody has is answered 481; a garbled body is
// answered 200, ignored, and logged once.
func TestNotifies(t *testing.T) {
	f := startFake(t)
	w, got, logs := startWatcher(t, f.addr(), Dialog, anna)
	sub := f.next()
	if sub.Method != sip.SUBSCRIBE || sub.GetHeader("Event").Value() != "dialog" || sub.Recipient.String() != anna.SIPURI ||
		sub.GetHeader("Accept").Value() != "application/dialog-info+xml" {
		t.Fatalf("first request:\n%s", sub)
	}
	// The NOTIFY may come before the 200 (RFC 6665 section 4.1.2.4).
	if code := f.notify(sub, "", "active;expires=3600", "application/dialog-info+xml", dialogs(0)); code != 200 {
		t.Fatalf("first NOTIFY answered %d", code)
	}
	f.answer(sub, 200, "OK")
	got.waitFor(t, anna.UPN, func(s presence.PBXState) bool { return s.Line == presence.LineIdle })
	if code := f.notify(sub, "", "active;expires=3500", "application/dialog-info+xml", dialogs(1, "confirmed")); code != 200 {
		t.Fatalf("NOTIFY answered %d", code)
	}
	st := got.waitFor(t, anna.UPN, func(s presence.PBXState) bool { return s.Line == presence.LineInCall })
	if st.Calls != 1 || st.Changed.IsZero() {
		t.Errorf("in a call: %+v", st)
	}
	if code := f.notify(sub, "someone-else", "active", "application/dialog-info+xml", dialogs(2)); code != 481 {
		t.Errorf("a NOTIFY of no subscription answered %d; want 481", code)
	}
	for i := 0; i < 2; i++ {
		if code := f.notify(sub, "", "active", "application/dialog-info+xml", "<dialog-info garbled"); code != 200 {
			t.Errorf("a garbled NOTIFY answered %d; want 200 (and ignored)", code)
		}
	}
	if n := logs.Count("could not be read"); n != 1 {
		t.Errorf("%d log lines for two garbled NOTIFYs; want 1:\n%s", n, logs)
	}
	if s, _ := w.State(anna.UPN); s.Line != presence.LineInCall {
		t.Errorf("a garbled NOTIFY changed the state to %+v", s)
	}
	f.notify(sub, "", "active", "application/dialog-info+xml", dialogs(3, "terminated"))
	got.waitFor(t, anna.UPN, func(s presence.PBXState) bool { return s.Line == presence.LineIdle })
	st2 := w.Status(true)
	if st2.Users != 1 || st2.Subscribed != 1 || st2.InCall != 0 || st2.Counts.Unknown != 1 || st2.Counts.Ignored != 2 {
		t.Errorf("status %+v", st2)
	}
}

// The PBX that forgot a subscription (481 to its refresh) gets a new one; a
// subscription the PBX ends (terminated;reason=deactivated) is made again;
// 404 is reported once by name and the other users carry on.
func TestReestablishAndRefuse(t *testing.T) {
	f := startFake(t)
	bob := users.User{UPN: "bob@contoso.test", SIPURI: "sip:1001@pbx.test", Account: "main"}
	w, _, logs := startWatcher(t, f.addr(), Dialog, anna, bob)
	subs := map[string]*sip.Request{}
	for i := 0; i < 2; i++ {
		r := f.next()
		subs[r.Recipient.User] = r
		if r.Recipient.User == "1001" {
			f.answer(r, 404, "Not Found")
		} else {
			f.answer(r, 200, "OK", "Expires", "3600")
		}
	}
	first := subs["1000"]
	waitStatus(t, w, func(s Status) bool { return s.Subscribed == 1 && s.Failed == 1 })
	if n := logs.Count("refuses to let presencebridge watch"); n != 1 || !strings.Contains(logs.String(), "1001") {
		t.Errorf("the refusal logged %d times (want once, naming sip:1001):\n%s", n, logs)
	}
	// The PBX ends the subscription: a new one (a new Call-ID) follows.
	f.notify(first, "", "terminated;reason=deactivated", "", "")
	again := f.next()
	if again.CallID().Value() == first.CallID().Value() {
		t.Fatalf("after terminated the watcher kept its dialog")
	}
	if tag, _ := again.To().Params.Get("tag"); tag != "" {
		t.Errorf("a new subscription carries a To tag %q", tag)
	}
	f.answer(again, 200, "OK", "Expires", "3600")
	waitStatus(t, w, func(s Status) bool { return s.Subscribed == 1 && s.Counts.Reestablished >= 1 })

	// A refresh the PBX answers 481 starts over.
	w.mu.Lock()
	w.users[anna.UPN].subs[0].due = w.o.Clock.Now()
	w.mu.Unlock()
	w.poke()
	refresh := f.next()
	if refresh.CallID().Value() != again.CallID().Value() {
		t.Fatalf("the refresh is not in the dialog")
	}
	if tag, _ := refresh.To().Params.Get("tag"); tag != "pbx-tag" {
		t.Errorf("the refresh's To tag is %q", tag)
	}
	f.answer(refresh, 481, "Call/Transaction Does Not Exist")
	fresh := f.next()
	if fresh.CallID().Value() == again.CallID().Value() {
		t.Fatalf("after 481 the watcher kept its dialog")
	}
	f.answer(fresh, 200, "OK", "Expires", "3600")
	waitStatus(t, w, func(s Status) bool { return s.Subscribed == 1 && s.Counts.Reestablished >= 2 })
}

func waitStatus(t *testing.T, w *Watcher, ok func(Status) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := w.Status(true)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never matched: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextFresh is the next request that is not a retransmission of one seen.
func (f *fakePBX) nextFresh(seen map[string]bool) *sip.Request {
	f.t.Helper()
	for {
		r := f.next()
		key := r.CallID().Value() + " " + strconv.Itoa(int(r.CSeq().SeqNo))
		if !seen[key] {
			seen[key] = true
			return r
		}
	}
}

// After a network break (the probe's refresh unanswered), the first answer
// again makes every other subscription refresh at once, for the NOTIFYs missed
// (not only the one whose refresh failed, which its backoff retries anyway).
func TestNetworkBreakRefreshesAll(t *testing.T) {
	f := startFake(t)
	bob := users.User{UPN: "bob@contoso.test", SIPURI: "sip:1001@pbx.test", Account: "main"}
	carl := users.User{UPN: "carl@contoso.test", SIPURI: "sip:1002@pbx.test", Account: "main"}
	w, _, logs := startWatcher(t, f.addr(), Dialog, anna, bob, carl)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		f.answer(f.nextFresh(seen), 200, "OK", "Expires", "3600")
	}
	waitStatus(t, w, func(s Status) bool { return s.Subscribed == 3 })
	ctx := context.Background()
	done := make(chan struct{})
	go func() { defer close(done); w.probe(ctx) }()
	lost := f.nextFresh(seen) // unanswered: the network is down
	<-done
	if !strings.Contains(logs.String(), "The PBX does not answer") {
		t.Fatalf("no line for the PBX not answering:\n%s", logs)
	}
	go w.probe(ctx)
	probed := f.nextFresh(seen)
	f.answer(probed, 200, "OK", "Expires", "3600")
	start := time.Now()
	for {
		other := f.nextFresh(seen)
		id := other.CallID().Value()
		if id == lost.CallID().Value() || id == probed.CallID().Value() {
			f.answer(other, 200, "OK", "Expires", "3600")
			continue
		}
		if tag, _ := other.To().Params.Get("tag"); tag == "" || other.Method != sip.SUBSCRIBE {
			t.Fatalf("the catch-up is not a refresh in the dialog:\n%s", other)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("the third subscription was refreshed %v after the PBX answered again; want at once", d)
		}
		f.answer(other, 200, "OK", "Expires", "3600")
		break
	}
	if !strings.Contains(logs.String(), "The PBX answers again") {
		t.Errorf("no line for the PBX answering again:\n%s", logs)
	}
}
