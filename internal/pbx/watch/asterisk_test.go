package watch

import (
	"context"
	"testing"
	"time"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
	"github.com/presencebridge/presencebridge/internal/users"
)

// A real call between two phones registered with the real Asterisk: the
// watcher, subscribed to both extensions' hints with digest credentials, sees
// each go into the call and back to idle.
func TestIntegrationAsteriskCall(t *testing.T) {
	srv := pbxtest.Asterisk(t, asterisk.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ph := pbxtest.Phones(t, srv.SIPAddr, srv.Domain, srv.Users, "1000", "1001")
	caller := users.User{UPN: "anna@contoso.test", SIPURI: srv.URI("1000"), Account: "main"}
	callee := users.User{UPN: "bob@contoso.test", SIPURI: srv.URI("1001"), Account: "main"}

	s := DefaultSettings()
	s.Watch = Dialog
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Username, sipS.Password = srv.SIPAddr, srv.Subscriber, secret.Value(srv.SubscriberPassword)
	w, got, _ := runWatcher(t, s, sipS, caller, callee)

	idle := func(s presence.PBXState) bool { return s.Line == presence.LineIdle }
	inCall := func(s presence.PBXState) bool { return s.Line == presence.LineInCall }
	got.waitFor(t, caller.UPN, idle)
	got.waitFor(t, callee.UPN, idle)
	call, err := ph["1000"].Call(ctx, srv.URI("1001"))
	if err != nil {
		t.Fatalf("call: %v\n%s", err, srv.LogTail(20))
	}
	got.waitFor(t, callee.UPN, inCall)
	got.waitFor(t, caller.UPN, inCall)
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, callee.UPN, idle)
	got.waitFor(t, caller.UPN, idle)
	if st := w.Status(false); st.Subscribed != 2 || st.Failed != 0 {
		t.Errorf("status %+v", st)
	}
}
