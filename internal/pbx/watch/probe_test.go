package watch

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

type probed struct {
	rs  []ProbeResult
	err error
}

// probeFake runs Probe for anna against the fake PBX in the background.
func probeFake(t *testing.T, f *fakePBX, watch string) chan probed {
	t.Helper()
	s := DefaultSettings()
	s.Watch, s.Listen = watch, "127.0.0.1:0"
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Timeout = f.addr(), 2*time.Second
	out := make(chan probed, 1)
	go func() {
		rs, err := Probe(context.Background(), s, sipS, anna)
		out <- probed{rs, err}
	}()
	return out
}

func wait(t *testing.T, ch chan probed) []ProbeResult {
	t.Helper()
	select {
	case p := <-ch:
		if p.err != nil {
			t.Fatal(p.err)
		}
		return p.rs
	case <-time.After(10 * time.Second):
		t.Fatal("Probe did not return within 10 s")
		return nil
	}
}

// A fetch is one SUBSCRIBE with Expires: 0; the NOTIFY that follows says
// terminated, and its body is the user's state. Nothing is left to end.
func TestProbeFetch(t *testing.T) {
	f := startFake(t)
	ch := probeFake(t, f, Dialog)
	sub := f.next()
	if sub.Method != sip.SUBSCRIBE || sub.GetHeader("Expires").Value() != "0" || sub.GetHeader("Event").Value() != "dialog" ||
		sub.Recipient.String() != anna.SIPURI {
		t.Fatalf("the fetch:\n%s", sub)
	}
	f.answer(sub, 200, "OK")
	if code := f.notify(sub, "", "terminated;reason=timeout", "application/dialog-info+xml", dialogs(4, "confirmed")); code != 200 {
		t.Errorf("the NOTIFY answered %d", code)
	}
	rs := wait(t, ch)
	if len(rs) != 1 {
		t.Fatalf("%d results: %+v", len(rs), rs)
	}
	r := rs[0]
	if !r.Accepted() || !r.Notified || r.Short || r.State.Line != presence.LineInCall || r.State.Calls != 1 || r.State.UPN != anna.UPN {
		t.Errorf("result %+v", r)
	}
	if r.Request != "SUBSCRIBE sip:1000@pbx.test (Event: dialog)" || !strings.HasPrefix(r.Contact, "sip:presencebridge@127.0.0.1:") {
		t.Errorf("request %q, contact %q", r.Request, r.Contact)
	}
	select {
	case extra := <-f.reqs:
		t.Errorf("a fetch sent a second request:\n%s", extra)
	case <-time.After(100 * time.Millisecond):
	}
}

// A PBX that takes no fetch (400, as Asterisk answers Expires: 0) gets a
// subscription of a minute in the same Call-ID, ended in its dialog after the
// first NOTIFY.
func TestProbeWithoutFetch(t *testing.T) {
	f := startFake(t)
	ch := probeFake(t, f, Presence)
	fetch := f.next()
	f.answer(fetch, 400, "Bad Request")
	sub := f.next()
	if sub.GetHeader("Expires").Value() != "60" || sub.CallID().Value() != fetch.CallID().Value() || sub.CSeq().SeqNo <= fetch.CSeq().SeqNo {
		t.Fatalf("after 400 to the fetch:\n%s", sub)
	}
	f.answer(sub, 200, "OK")
	f.notify(sub, "", "active;expires=60", "application/pidf+xml",
		`<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:1000@pbx.test"><tuple id="t"><status><basic>open</basic></status></tuple></presence>`)
	end := f.next()
	if tag, _ := end.To().Params.Get("tag"); end.GetHeader("Expires").Value() != "0" || end.CallID().Value() != sub.CallID().Value() || tag != "pbx-tag" {
		t.Fatalf("the subscription is not ended in its dialog:\n%s", end)
	}
	f.answer(end, 200, "OK")
	rs := wait(t, ch)
	if r := rs[0]; !r.Accepted() || !r.Short || !r.Notified || r.BodyErr != nil {
		t.Errorf("result %+v", r)
	}
}

// Refusals carry the watch's explanation; an accepted fetch without a NOTIFY
// says so; a garbled body is reported, not guessed at.
func TestProbeRefusedOrSilent(t *testing.T) {
	f := startFake(t)
	ch := probeFake(t, f, Both)
	f.answer(f.next(), 489, "Bad Event")
	sub := f.next()
	f.answer(sub, 200, "OK")
	rs := wait(t, ch) // after ProbeNotifyWait
	if len(rs) != 2 {
		t.Fatalf("%d results: %+v", len(rs), rs)
	}
	if r := rs[0]; r.Accepted() || r.Code != 489 || r.Event != "dialog" || !strings.Contains(r.Refusal, "set [PBX] Watch to the event it serves") {
		t.Errorf("489: %+v", r)
	}
	if r := rs[1]; !r.Accepted() || r.Notified || r.Event != "presence" {
		t.Errorf("no NOTIFY: %+v", r)
	}

	ch = probeFake(t, f, Dialog)
	sub = f.next()
	f.answer(sub, 200, "OK")
	f.notify(sub, "", "terminated;reason=timeout", "application/dialog-info+xml", "<dialog-info garbled")
	if r := wait(t, ch)[0]; !r.Notified || r.BodyErr == nil || r.State.Known() {
		t.Errorf("garbled body: %+v", r)
	}

	ch = probeFake(t, f, Dialog)
	f.answer(f.next(), 403, "Forbidden")
	if r := wait(t, ch)[0]; r.Code != 403 || !strings.Contains(r.Refusal, "allow subscriptions from [SIP] Username or From") {
		t.Errorf("403: %+v", r)
	}
}

// Against the real Asterisk (which takes no fetch): the hint of a phone in a
// real call says so, and idle again after it.
func TestIntegrationProbeAsteriskCall(t *testing.T) {
	srv := pbxtest.Asterisk(t, asterisk.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ph := pbxtest.Phones(t, srv.SIPAddr, srv.Domain, srv.Users, "1000", "1001")
	s := DefaultSettings()
	s.Watch, s.Listen = Dialog, "127.0.0.1:0"
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Username, sipS.Password = srv.SIPAddr, srv.Subscriber, secret.Value(srv.SubscriberPassword)
	bob := anna
	bob.SIPURI = srv.URI("1001")
	line := func() presence.Line {
		t.Helper()
		rs, err := Probe(ctx, s, sipS, bob)
		if err != nil {
			t.Fatal(err)
		}
		if r := rs[0]; !r.Accepted() || !r.Notified || !r.Short {
			t.Fatalf("probe %+v\n%s", r, srv.LogTail(20))
		}
		return rs[0].State.Line
	}
	if l := line(); l != presence.LineIdle {
		t.Fatalf("before the call: %q", l)
	}
	call, err := ph["1000"].Call(ctx, srv.URI("1001"))
	if err != nil {
		t.Fatalf("call: %v\n%s", err, srv.LogTail(20))
	}
	if l := line(); l != presence.LineInCall {
		t.Errorf("in the call: %q", l)
	}
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for line() != presence.LineIdle {
		if time.Now().After(deadline) {
			t.Fatal("still not idle 5 s after the hang-up")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
