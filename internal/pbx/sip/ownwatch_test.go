package sip_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
	"github.com/presencebridge/presencebridge/internal/users"
)

// What presencebridge publishes with Event: dialog, its own PBX watch (package
// watch, which subscribes to the same Event: dialog of the same users) leaves
// out, so a Teams call never comes back as a PBX call: no loop.

// The document is read by the watch's own parser as one dialog of
// presencebridge's, which its tracker leaves out.
func TestDialogInfoIsOwnForTheWatch(t *testing.T) {
	if !strings.HasPrefix(sip.DialogID, watch.OwnIDPrefix) {
		t.Fatalf("DialogID %q does not start with watch.OwnIDPrefix %q", sip.DialogID, watch.OwnIDPrefix)
	}
	uri := "sip:1001@pbx.example"
	for i, m := range []presence.Mapped{
		presence.DefaultMapping().Map(presence.State{Availability: presence.Busy, Activity: presence.ActInACall}),
		{State: "busy", Basic: "open", Dialog: "early"},
		presence.DefaultMapping().Map(presence.State{Availability: presence.Available, Activity: presence.ActAvailable}),
	} {
		info, err := watch.ParseDialogInfo(sip.DialogInfo(uri, uint64(i), m))
		if err != nil {
			t.Fatalf("%+v: the watch cannot read the document: %v", m, err)
		}
		if info.Entity != uri || info.Version != uint64(i) || !info.Full {
			t.Errorf("%+v: read as %+v", m, info)
		}
		lit := m.DialogState() != "terminated"
		if lit && (len(info.Dialogs) != 1 || !info.Dialogs[0].Own() || info.Dialogs[0].State != m.DialogState()) || !lit && len(info.Dialogs) != 0 {
			t.Errorf("%+v: dialogs %+v", m, info.Dialogs)
		}
		var tr watch.DialogTracker
		if _, err := tr.Apply(info); err != nil || tr.Line() != presence.LineIdle || tr.Calls() != 0 {
			t.Errorf("%+v: the watch's tracker says %s with %d calls (%v); want idle, none", m, tr.Line(), tr.Calls(), err)
		}
	}
}

// lines collects what the watch hands on.
type lines struct {
	mu   sync.Mutex
	last map[string]presence.Line
}

func (l *lines) take(_ context.Context, cs []presence.PBXChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		l.last[c.User.UPN] = c.Current.Line
	}
}

func (l *lines) get(upn string) presence.Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[upn]
}

// Against Kamailio as a small PBX: presencebridge publishes a Teams call of
// 1001 as a confirmed dialog, which an independent watcher (a BLF key) sees,
// while presencebridge's own watch of 1001 receives it and still says idle; a
// real call to 1001 through the PBX, merged by Kamailio with that publication,
// is a call to the watch, and its end makes the line idle again.
func TestIntegrationOwnWatchIgnoresOwnDialog(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{PBX: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	phones := pbxtest.Phones(t, k.UDP, k.Domain, nil, "1000", "1001")
	bob := users.User{UPN: "bob@contoso.test", SIPURI: "sip:1001@" + k.Domain, Account: "main"}

	sipS := sip.DefaultSettings()
	sipS.Server, sipS.Event, sipS.Timeout = k.UDP, sip.EventDialog, 2*time.Second
	pub, err := sip.New(sip.Options{Settings: sipS, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Close() })

	ws := watch.DefaultSettings()
	ws.Watch, ws.Listen = watch.Dialog, "127.0.0.1:0"
	got := &lines{last: map[string]presence.Line{}}
	w, err := watch.New(watch.Options{Settings: ws, SIP: sipS, Changes: got.take, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done; w.Close() })
	w.SetUsers([]users.User{bob})

	until := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s: watch %+v, line %q\n%s", what, w.Status(false), got.get(bob.UPN), k.LogTail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	until("the watch to see 1001 idle", func() bool { return got.get(bob.UPN) == presence.LineIdle })

	blf, err := kamailio.WatchEvent(ctx, k.UDP, bob.SIPURI, "dialog")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(blf.Close)
	notifies := w.Status(false).Counts.Notifies
	s := presence.State{UPN: bob.UPN, Availability: presence.Busy, Activity: presence.ActInACall}
	it := delivery.Item{User: bob, State: s, Mapped: presence.DefaultMapping().Map(s), Reason: delivery.ReasonChange}
	if err := pub.Send(ctx, []delivery.Item{it})[0]; err != nil {
		t.Fatalf("publish: %v\n%s", err, k.LogTail(20))
	}
	if _, err := blf.WaitFor(ctx, kamailio.Notify.Confirmed); err != nil {
		t.Fatalf("the BLF watcher did not see the Teams call: %v\n%s", err, k.LogTail(20))
	}
	until("the watch's NOTIFY of the publication", func() bool { return w.Status(false).Counts.Notifies > notifies })
	time.Sleep(300 * time.Millisecond) // what the watch would hand on, it has handed on
	if line := got.get(bob.UPN); line != presence.LineIdle {
		t.Fatalf("presencebridge's own watch reads its Teams call publication as %q, want idle", line)
	}
	if st, _ := w.State(bob.UPN); st.Line != presence.LineIdle || st.Calls != 0 {
		t.Fatalf("the watch's state of 1001: %+v", st)
	}

	call, err := phones["1000"].Call(ctx, bob.SIPURI)
	if err != nil {
		t.Fatalf("call: %v\n%s", err, k.LogTail(20))
	}
	until("the real call", func() bool { return got.get(bob.UPN) == presence.LineInCall })
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	until("the real call's end", func() bool { return got.get(bob.UPN) == presence.LineIdle })
}
