package sip

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// Integration tests against a real Kamailio presence server (Debian's kamailio
// and kamailio-presence-modules), watched by internal/sim/kamailio's own subscriber.
// Without Kamailio they skip, unless CI=true.

func watch(t *testing.T, ctx context.Context, server, uri string) *kamailio.Watcher {
	t.Helper()
	w, err := kamailio.Watch(ctx, server, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func waitFor(t *testing.T, ctx context.Context, w *kamailio.Watcher, what string, match func(kamailio.Notify) bool, k ...*kamailio.Server) kamailio.Notify {
	t.Helper()
	n, err := w.WaitFor(ctx, match)
	if err != nil {
		var logs strings.Builder
		for _, s := range k {
			fmt.Fprintf(&logs, "\nkamailio %s:\n%s", s.UDP, s.LogTail(20))
		}
		t.Fatalf("waiting for %s: %v%s", what, err, logs.String())
	}
	return n
}

func inACall(n kamailio.Notify) bool {
	return n.Basic == "open" && slices.Equal(n.Activities, []string{"on-the-phone"}) && n.Note == "In a call"
}

func offWork(n kamailio.Notify) bool {
	return n.Basic == "closed" && len(n.Activities) == 0 && n.Note == "Off work"
}

// withdrawn: after the removal Kamailio 5.6 notifies the tuple closed, with no
// note or activity left of our state.
func withdrawn(n kamailio.Notify) bool {
	return n.Basic == "closed" && n.Note == "" && len(n.Activities) == 0
}

// Over UDP, TCP and TLS with digest auth: a new publication, a modification with
// SIP-If-Match, and a removal, each seen by the independent watcher.
func TestIntegrationKamailioTransports(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			k := pbxtest.Kamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}, TLS: transport == "tls"})
			server := map[string]string{"udp": k.UDP, "tcp": k.TCP, "tls": k.TLS}[transport]
			p := newPublisher(t, Options{Settings: Settings{Transport: transport, Server: server, Username: "pb", Password: "s3cret", CAFile: k.CAFile}})
			uri := "sip:1001@pbx.example"
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			w := watch(t, ctx, k.UDP, uri)

			if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
				t.Fatalf("publish: %v\n%s", err, k.LogTail(20))
			}
			waitFor(t, ctx, w, "Busy/InACall", inACall, k)

			if err := send1(t, p, itemFor(uri, presence.Offline, presence.ActOffWork)); err != nil {
				t.Fatalf("modify: %v", err)
			}
			waitFor(t, ctx, w, "Offline/OffWork", offWork, k)
			if c := p.counts(); c.initial != 1 || c.modified != 1 || c.restarted != 0 {
				t.Errorf("counts %+v; want the second state sent as a modification (SIP-If-Match) Kamailio accepted", c)
			}

			if err := send1(t, p, removal(uri)); err != nil {
				t.Fatalf("remove: %v", err)
			}
			waitFor(t, ctx, w, "the removal", withdrawn, k)
			if c := p.counts(); c.removed != 1 || p.Published() != 0 {
				t.Errorf("counts %+v, %d published after the removal", c, p.Published())
			}
		})
	}
}

// Through Kamailio as an outbound proxy that asks for proxy authentication (407)
// in front of the presence server that asks for its own (401).
func TestIntegrationKamailioOutboundProxy(t *testing.T) {
	users := map[string]string{"pb": "s3cret"}
	pres := pbxtest.Kamailio(t, kamailio.Options{Users: users})
	proxy := pbxtest.Kamailio(t, kamailio.Options{Users: users, Forward: pres.UDP, Challenge: "proxy"})
	// Server is not reachable: every request must go through the proxy.
	p := newPublisher(t, Options{Settings: Settings{Server: "pbx.example:5060", OutboundProxy: proxy.UDP, Username: "pb", Password: "s3cret"}})
	uri := "sip:1002@pbx.example"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w := watch(t, ctx, pres.UDP, uri)

	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatalf("publish through the proxy: %v\nproxy:\n%s\npresence:\n%s", err, proxy.LogTail(20), pres.LogTail(20))
	}
	waitFor(t, ctx, w, "Busy/InACall", inACall, proxy, pres)
	if err := send1(t, p, itemFor(uri, presence.Offline, presence.ActOffWork)); err != nil {
		t.Fatalf("modify through the proxy: %v", err)
	}
	waitFor(t, ctx, w, "Offline/OffWork", offWork, proxy, pres)
	if err := send1(t, p, removal(uri)); err != nil {
		t.Fatalf("remove through the proxy: %v", err)
	}
	waitFor(t, ctx, w, "the removal", withdrawn, proxy, pres)
	if c := p.counts(); c.initial != 1 || c.modified != 1 || c.removed != 1 {
		t.Errorf("counts %+v", c)
	}
}

// Wrong credentials: refused with a message naming the settings, never the password.
func TestIntegrationKamailioWrongPassword(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}})
	p := newPublisher(t, Options{Settings: Settings{Server: k.UDP, Username: "pb", Password: "wrong-pw"}})
	err := send1(t, p, itemFor("sip:1003@pbx.example", presence.Busy, presence.ActBusy))
	if err == nil || !strings.Contains(err.Error(), "check [SIP] Username and Password") || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("err = %v", err)
	}
}

// Kamailio restarted and lost its publications while presencebridge kept their
// entity tags in its state file: the conditional PUBLISH is refused (Kamailio
// 5.6 says 500, not 412) and the publisher starts over, so the watcher still
// sees the new state.
func TestIntegrationKamailioUnknownETagStartsOver(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{})
	uri := "sip:1004@pbx.example"
	store := &memStore{pubs: map[Key]Publication{pk(uri): {ETag: "a-tag-from-before-the-restart",
		Expires: time.Now().Add(time.Hour), Lifetime: time.Hour, Transport: "udp", Dest: k.UDP}}}
	p := newPublisher(t, Options{Settings: Settings{Server: k.UDP}, ETags: store})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w := watch(t, ctx, k.UDP, uri)
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatalf("publish with an ETag Kamailio does not know: %v", err)
	}
	waitFor(t, ctx, w, "Busy/InACall", inACall, k)
	if c := p.counts(); c.restarted != 1 || c.initial != 1 || c.modified != 0 {
		t.Errorf("counts %+v; want the conditional PUBLISH refused and one fresh publication", c)
	}
	if got := store.pubs[pk(uri)].ETag; got == "" || got == "a-tag-from-before-the-restart" {
		t.Errorf("kept ETag %q, want Kamailio's new one", got)
	}
}

// A refresh (SIP-If-Match, no body) keeps the publication at Kamailio: the
// entity tag it gives back is good for the next modification.
func TestIntegrationKamailioRefresh(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{})
	clk := clock.NewFake(time.Now())
	p := newPublisher(t, Options{Settings: Settings{Server: k.UDP, Expires: 10 * time.Minute}, Clock: clk})
	uri := "sip:1006@pbx.example"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w := watch(t, ctx, k.UDP, uri)
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, w, "Busy/InACall", inACall, k)
	first := p.publication(pk(uri))
	if _, n, _ := p.refreshDue(ctx); n != 0 || p.counts().refreshed != 0 {
		t.Fatalf("refreshed right after publishing (%d failed)", n)
	}
	clk.Advance(9 * time.Minute) // within the last 20% of the lifetime
	if _, n, _ := p.refreshDue(ctx); n != 0 || p.counts().refreshed != 1 {
		t.Fatalf("at 90%% of the lifetime: %d failed, counts %+v; want one refresh", n, p.counts())
	}
	if after := p.publication(pk(uri)); after == nil || !after.Expires.After(first.Expires) || after.ETag == first.ETag {
		t.Fatalf("after the refresh: %+v (before %+v)", after, first)
	}
	if err := send1(t, p, itemFor(uri, presence.Offline, presence.ActOffWork)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, w, "Offline/OffWork", offWork, k)
	if c := p.counts(); c.modified != 1 || c.restarted != 0 {
		t.Errorf("counts %+v; want the refreshed ETag to take a modification", c)
	}
}

// BenchmarkPublishKamailio publishes to b.N distinct users in one Send and
// reports PUBLISHes accepted per second: new publications over UDP and TCP,
// with digest auth, and modifications of existing ones; Event: presence, and
// Event: dialog over UDP.
func BenchmarkPublishKamailio(b *testing.B) {
	cases := []struct {
		name      string
		transport string
		auth      bool
		modify    bool
		event     string
	}{
		{"initial/udp", "udp", false, false, EventPresence},
		{"initial/tcp", "tcp", false, false, EventPresence},
		{"initial/udp+digest", "udp", true, false, EventPresence},
		{"modify/udp", "udp", false, true, EventPresence},
		{"initial/udp/dialog", "udp", false, false, EventDialog},
		{"modify/udp/dialog", "udp", false, true, EventDialog},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			o := kamailio.Options{Dir: b.TempDir()}
			if c.auth {
				o.Users = map[string]string{"pb": "bench-secret"}
			}
			k := pbxtest.Kamailio(b, o)
			po := Options{Settings: Settings{Transport: c.transport, Server: map[string]string{"udp": k.UDP, "tcp": k.TCP}[c.transport], Event: c.event,
				Rate: 1e6, Concurrency: 64}, Logger: slog.New(slog.DiscardHandler)}
			if c.auth {
				po.Username, po.Password = "pb", "bench-secret"
			}
			p := newPublisher(b, po)
			items := make([]delivery.Item, b.N)
			for i := range items {
				items[i] = itemFor(fmt.Sprintf("sip:%d@pbx.example", 100000+i), presence.Busy, presence.ActInACall)
			}
			if c.modify {
				sendAll(b, p, items)
				for i := range items {
					items[i] = itemFor(items[i].User.SIPURI, presence.Away, presence.ActAway)
				}
			}
			b.ResetTimer()
			start := time.Now()
			sendAll(b, p, items)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publish/s")
		})
	}
}

func sendAll(b *testing.B, p *Publisher, items []delivery.Item) {
	for i, err := range p.Send(context.Background(), items) {
		if err != nil {
			b.Fatalf("item %d: %v", i, err)
		}
	}
}

// Kamailio restarts with empty tables, once at a quiet time (nothing to send)
// and once after an outage long enough to be noticed. Both times every user's
// publication is back within seconds, without a change from Teams: the idle probe
// finds the entity tag refused (or the server gone and back), and the dispatcher
// re-asserts every user's state. Before, only users whose state changed during
// the outage were published again; the rest stayed dark until their refresh (an
// hour).
func TestIntegrationKamailioRestartIsToldAgain(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{})
	p := newPublisher(t, Options{Settings: Settings{Server: k.UDP, Timeout: 300 * time.Millisecond}, ETags: &memStore{pubs: map[Key]Publication{}}})
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := delivery.NewDispatcher(delivery.Options{Settings: delivery.Settings{BatchSize: 500, RetryMin: 100 * time.Millisecond, RetryMax: 300 * time.Millisecond, ReassertRate: 500, ProbeInterval: 200 * time.Millisecond}, Outbox: delivery.BoltOutbox(db), Targets: []delivery.Target{p}, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(dctx); close(done) }()
	defer func() { stop(); <-done }()

	const n = 20
	var items []delivery.Item
	for i := range n {
		it := itemFor(fmt.Sprintf("sip:%d@pbx.example", 2000+i), presence.Busy, presence.ActInACall)
		it.User.UPN = fmt.Sprintf("u%d@contoso.example", i)
		items = append(items, it)
	}
	d.Enqueue(ctx, items)
	for d.Pending("sip") > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	allPublished := func(k *kamailio.Server) {
		t.Helper()
		for _, it := range items {
			w := watch(t, ctx, k.UDP, it.User.SIPURI)
			waitFor(t, ctx, w, it.User.SIPURI+" in a call", inACall, k)
			w.Close()
		}
	}
	allPublished(k)
	before := d.Status()[0].Reasserted

	k, err = k.Restart(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Stop() })
	allPublished(k)
	if st := d.Status()[0]; st.Reasserted < before+n {
		t.Errorf("%d states re-asserted after the restart, want %d", st.Reasserted-before, n)
	}
	before = d.Status()[0].Reasserted

	k.Stop()
	for !d.Status()[0].Down {
		if ctx.Err() != nil {
			t.Fatalf("the outage was not noticed: %+v", d.Status()[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	k, err = k.Restart(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Stop() })
	allPublished(k)
	if st := d.Status()[0]; st.Down || st.LastError != "" || st.Reasserted < before+n {
		t.Errorf("after the outage: %+v, want up, no error and every user re-asserted again", st)
	}
}
