package watch

import (
	"context"
	"testing"
	"time"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/sipua"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// phones registers a sipua phone for each extension with the PBX.
func phones(t *testing.T, server, domain string, passwords map[string]string, exts ...string) map[string]*sipua.Phone {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]*sipua.Phone{}
	for _, ext := range exts {
		p, err := sipua.New(ctx, sipua.Options{Server: server, User: ext, Domain: domain, Password: passwords[ext]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := p.Register(ctx); err != nil {
			t.Fatalf("register %s: %v", ext, err)
		}
		out[ext] = p
	}
	return out
}

// A real call between two phones registered with the real Asterisk: the
// watcher, subscribed to both extensions' hints with digest credentials, sees
// each go into the call and back to idle.
func TestIntegrationAsteriskCall(t *testing.T) {
	testkit.Need(t, "the Asterisk integration test", asterisk.Find)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := asterisk.Start(ctx, asterisk.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	ph := phones(t, srv.SIPAddr, srv.Domain, srv.Users, "1000", "1001")
	caller := users.User{UPN: "anna@contoso.test", SIPURI: srv.URI("1000"), Account: "main"}
	callee := users.User{UPN: "bob@contoso.test", SIPURI: srv.URI("1001"), Account: "main"}

	s := DefaultSettings()
	s.Watch, s.Listen = Dialog, "127.0.0.1:0"
	sipS := pbxsip.DefaultSettings()
	sipS.Server, sipS.Username, sipS.Password = srv.SIPAddr, srv.Subscriber, secret.Value(srv.SubscriberPassword)
	got := &changes{ch: make(chan struct{}, 1)}
	w, err := New(Options{Settings: s, SIP: sipS, Changes: got.take})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done; w.Close() })
	w.SetUsers([]users.User{caller, callee})

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
