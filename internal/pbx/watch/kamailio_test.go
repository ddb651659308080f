package watch

import (
	"context"
	"testing"
	"time"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
	"github.com/presencebridge/presencebridge/internal/users"
)

// A real call through Kamailio as a small PBX (pua_dialoginfo publishing the
// calls' dialogs): the watcher sees caller and callee in the call and back;
// then Kamailio restarts, forgetting its subscriptions, and the watcher finds
// out (its probe's refresh gets 481), subscribes again and sees the next call.
func TestIntegrationKamailioCallAndRestart(t *testing.T) {
	srv := pbxtest.Kamailio(t, kamailio.Options{PBX: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ph := pbxtest.Phones(t, srv.UDP, srv.Domain, nil, "1000", "1001")
	caller := users.User{UPN: "anna@contoso.test", SIPURI: "sip:1000@" + srv.Domain, Account: "main"}
	callee := users.User{UPN: "bob@contoso.test", SIPURI: "sip:1001@" + srv.Domain, Account: "main"}

	s := DefaultSettings()
	s.Watch = Dialog
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Timeout = srv.UDP, 2*time.Second
	w, got, _ := runWatcher(t, s, sipS, caller, callee)

	idle := func(s presence.PBXState) bool { return s.Line == presence.LineIdle }
	inCall := func(s presence.PBXState) bool { return s.Line == presence.LineInCall }
	call := func() {
		t.Helper()
		got.waitFor(t, caller.UPN, idle)
		got.waitFor(t, callee.UPN, idle)
		c, err := ph["1000"].Call(ctx, "sip:1001@"+srv.Domain)
		if err != nil {
			t.Fatalf("call: %v\n%s", err, srv.LogTail(20))
		}
		got.waitFor(t, callee.UPN, inCall)
		got.waitFor(t, caller.UPN, inCall)
		if err := c.Hangup(ctx); err != nil {
			t.Fatal(err)
		}
		got.waitFor(t, callee.UPN, idle)
		got.waitFor(t, caller.UPN, idle)
	}
	call()

	srv, err := srv.Restart(ctx, true) // forget: the subscriptions are gone
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	for _, p := range ph {
		if err := p.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := w.Status(false).Counts.Reestablished
	w.probe(ctx) // what the 30 s ticker does
	waitStatus(t, w, func(st Status) bool { return st.Subscribed == 2 && st.Counts.Reestablished >= before+2 })
	call()
}
