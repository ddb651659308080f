package sip

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// Event: dialog against a real Kamailio (presence_dialoginfo), watched by an
// independent subscriber of Event: dialog as a phone's BLF key is.

func watchEvent(t *testing.T, ctx context.Context, server, uri, event string) *kamailio.Watcher {
	t.Helper()
	w, err := kamailio.WatchEvent(ctx, server, uri, event)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// lit: a BLF key shows busy (presencebridge's confirmed dialog).
func lit(n kamailio.Notify) bool { return n.Confirmed() }

// idle: a dialog-info body without a dialog that is in progress (what the
// publisher sends for a state that is not a call, and what Kamailio
// notifies once the publication is gone).
func idle(n kamailio.Notify) bool {
	if n.Raw == "" {
		return true // no publication left: Kamailio's empty NOTIFY
	}
	for _, s := range n.DialogStates {
		if s != "terminated" {
			return false
		}
	}
	return true
}

// Over UDP, TCP and TLS with digest auth: a Teams call lights the key, the end
// of it puts it out, the next call lights it again (Kamailio still takes the
// publication's modifications), and the removal leaves it out.
func TestIntegrationKamailioDialog(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			k := pbxtest.Kamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}, TLS: transport == "tls"})
			server := map[string]string{"udp": k.UDP, "tcp": k.TCP, "tls": k.TLS}[transport]
			p := newPublisher(t, Options{Settings: Settings{Transport: transport, Server: server, Event: EventDialog,
				Username: "pb", Password: "s3cret", CAFile: k.CAFile}})
			uri := "sip:1001@pbx.example"
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			w := watchEvent(t, ctx, k.UDP, uri, "dialog")

			for i, s := range []struct {
				a    presence.Availability
				act  presence.Activity
				want func(kamailio.Notify) bool
			}{
				{presence.Busy, presence.ActInACall, lit},
				{presence.Available, presence.ActAvailable, idle},
				{presence.DoNotDisturb, presence.ActPresenting, lit},
				{presence.Offline, presence.ActOffWork, idle},
				{presence.Busy, presence.ActInAConferenceCall, lit},
			} {
				if err := send1(t, p, itemFor(uri, s.a, s.act)); err != nil {
					t.Fatalf("%s/%s: %v\n%s", s.a, s.act, err, k.LogTail(20))
				}
				waitFor(t, ctx, w, fmt.Sprintf("step %d, %s/%s", i, s.a, s.act), s.want, k)
			}
			if c := p.counts(); c.initial != 1 || c.modified != 4 || c.restarted != 0 {
				t.Errorf("counts %+v; want one publication, modified four times", c)
			}
			if err := send1(t, p, removal(uri)); err != nil {
				t.Fatalf("remove: %v", err)
			}
			waitFor(t, ctx, w, "the removal", idle, k)
			if p.Published() != 0 {
				t.Errorf("%d published after the removal", p.Published())
			}
		})
	}
}

// Event = both through Kamailio as an outbound proxy asking for proxy
// authentication in front of the presence server: a presence watcher and a
// dialog watcher each see their state, from two publications.
func TestIntegrationKamailioBothThroughProxy(t *testing.T) {
	users := map[string]string{"pb": "s3cret"}
	pres := pbxtest.Kamailio(t, kamailio.Options{Users: users})
	proxy := pbxtest.Kamailio(t, kamailio.Options{Users: users, Forward: pres.UDP, Challenge: "proxy"})
	p := newPublisher(t, Options{Settings: Settings{Server: "pbx.example:5060", OutboundProxy: proxy.UDP, Event: EventBoth,
		Username: "pb", Password: "s3cret"}})
	uri := "sip:1002@pbx.example"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wp := watch(t, ctx, pres.UDP, uri)
	wd := watchEvent(t, ctx, pres.UDP, uri, "dialog")

	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatalf("publish through the proxy: %v\nproxy:\n%s\npresence:\n%s", err, proxy.LogTail(20), pres.LogTail(20))
	}
	waitFor(t, ctx, wp, "Busy/InACall as presence", inACall, proxy, pres)
	waitFor(t, ctx, wd, "Busy/InACall as a dialog", lit, proxy, pres)
	if err := send1(t, p, itemFor(uri, presence.Offline, presence.ActOffWork)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, wp, "Offline/OffWork as presence", offWork, proxy, pres)
	waitFor(t, ctx, wd, "Offline/OffWork as a dialog", idle, proxy, pres)
	if pp, dp := p.publication(pk(uri)), p.publication(dk(uri)); pp == nil || dp == nil || pp.ETag == dp.ETag || dp.Version != 1 {
		t.Errorf("publications: presence %+v, dialog %+v; want two with their own entity tags, the dialog's at version 1", pp, dp)
	}
	if c := p.counts(); c.initial != 2 || c.modified != 2 {
		t.Errorf("counts %+v", c)
	}
}

// Kamailio restarts with empty tables while users are in Teams calls (Event =
// both): the dispatcher's probe finds the entity tag refused and re-asserts
// every user, so each dialog watcher sees the key lit again and each presence
// watcher the call, without a change from Teams; the calls' end then puts the
// keys out.
func TestIntegrationKamailioDialogRestart(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{})
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := newPublisher(t, Options{Settings: Settings{Server: k.UDP, Event: EventBoth, Timeout: 300 * time.Millisecond}, ETags: BoltPublications(db)})
	d := delivery.NewDispatcher(delivery.Options{Settings: delivery.Settings{BatchSize: 500, RetryMin: 100 * time.Millisecond,
		RetryMax: 300 * time.Millisecond, ReassertRate: 500, ProbeInterval: 200 * time.Millisecond},
		Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{p}, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(dctx); close(done) }()
	defer func() { stop(); <-done }()

	const n = 10
	items := func(a presence.Availability, act presence.Activity) []delivery.Item {
		var out []delivery.Item
		for i := range n {
			it := itemFor(fmt.Sprintf("sip:%d@pbx.example", 3000+i), a, act)
			it.User.UPN = fmt.Sprintf("u%d@contoso.example", i)
			out = append(out, it)
		}
		return out
	}
	settled := func() {
		t.Helper()
		for d.Pending("sip") > 0 {
			if ctx.Err() != nil {
				t.Fatalf("still pending: %+v", d.Status()[0])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	seeAll := func(k *kamailio.Server, what string, dialog, pres func(kamailio.Notify) bool) {
		t.Helper()
		for _, it := range items("", "") {
			uri := it.User.SIPURI
			wd := watchEvent(t, ctx, k.UDP, uri, "dialog")
			waitFor(t, ctx, wd, uri+" "+what+" (dialog)", dialog, k)
			wd.Close()
			wp := watch(t, ctx, k.UDP, uri)
			waitFor(t, ctx, wp, uri+" "+what+" (presence)", pres, k)
			wp.Close()
		}
	}
	d.Enqueue(ctx, items(presence.Busy, presence.ActInACall))
	settled()
	seeAll(k, "in a call", lit, inACall)
	before := d.Status()[0].Reasserted

	k, err = k.Restart(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Stop() })
	seeAll(k, "in a call after the restart", lit, inACall)
	if st := d.Status()[0]; st.Reasserted < before+n {
		t.Errorf("%d states re-asserted after the restart, want %d", st.Reasserted-before, n)
	}

	d.Enqueue(ctx, items(presence.Available, presence.ActAvailable))
	settled()
	available := func(n kamailio.Notify) bool { return n.Basic == "open" && n.Note == "Available" }
	seeAll(k, "after the call", idle, available)
	got, err := BoltPublications(db).LoadPublications()
	if err != nil || len(got) != 2*n {
		t.Fatalf("kept %d publications (%v), want %d", len(got), err, 2*n)
	}
	for key, pub := range got {
		// Versions went on through the restart: 0 in the call, 1 re-published
		// after Kamailio lost it, 2 after the call.
		if key.Event == EventDialog && pub.Version != 2 {
			t.Errorf("%s: dialog-info version %d, want 2", key.URI, pub.Version)
		}
	}
}
