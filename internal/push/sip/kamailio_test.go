package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/kamailio"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/push"
	"github.com/presencebridge/presencebridge/internal/users"
)

func startKamailio(t *testing.T, o kamailio.Options) *kamailio.Server {
	t.Helper()
	kamailio.Require(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := kamailio.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func itemFor(uri string, a presence.Availability, act presence.Activity) push.Item {
	s := presence.State{UPN: "u@contoso.example", Availability: a, Activity: act}
	return push.Item{User: users.User{UPN: "u@contoso.example", SIPURI: uri}, State: s, Mapped: presence.DefaultMapping().Map(s), Reason: push.ReasonChange}
}

func newPublisher(t *testing.T, o Options) *Publisher {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func send1(t *testing.T, p *Publisher, it push.Item) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Send(ctx, []push.Item{it})[0]
}

// Over UDP, TCP and TLS with digest auth: a new publication, a modification with
// SIP-If-Match, and a removal, each seen by an independent watcher.
func TestKamailioTransportsWithDigestAuth(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			k := startKamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}, TLS: transport == "tls"})
			server := map[string]string{"udp": k.UDP, "tcp": k.TCP, "tls": k.TLS}[transport]
			p := newPublisher(t, Options{Transport: transport, Server: server, Username: "pb", Password: "s3cret", CAFile: k.CAFile})
			uri := "sip:1001@pbx.example"
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			w, err := kamailio.Watch(ctx, k.UDP, uri)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()

			if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
				t.Fatalf("publish: %v\n%s", err, k.LogTail(20))
			}
			if _, err := w.WaitFor(ctx, func(n Notify) bool {
				return n.Basic == "open" && len(n.Activities) == 1 && n.Activities[0] == "on-the-phone" && n.Note == "In a call"
			}); err != nil {
				t.Fatal(err)
			}
			etag := p.publication(uri).ETag
			if err := send1(t, p, itemFor(uri, presence.Offline, presence.ActOffWork)); err != nil {
				t.Fatalf("modify: %v", err)
			}
			if _, err := w.WaitFor(ctx, func(n Notify) bool { return n.Basic == "closed" && n.Note == "Off work" }); err != nil {
				t.Fatal(err)
			}
			if pub := p.publication(uri); pub == nil || pub.ETag == "" || pub.ETag == etag {
				t.Errorf("after a modification the ETag is %+v, want a new one (was %q)", pub, etag)
			}
			rm := itemFor(uri, "", "")
			rm.Reason = push.ReasonRemove
			if err := send1(t, p, rm); err != nil {
				t.Fatalf("remove: %v", err)
			}
			if _, err := w.WaitFor(ctx, func(n Notify) bool { return !strings.Contains(n.Raw, "Off work") }); err != nil {
				t.Fatal(err)
			}
			if p.Published() != 0 {
				t.Errorf("%d publications left after the removal", p.Published())
			}
		})
	}
}

type Notify = kamailio.Notify

// Through Kamailio as an outbound proxy that asks for proxy authentication (407)
// in front of the presence server that asks for its own (401).
func TestKamailioOutboundProxy(t *testing.T) {
	users := map[string]string{"pb": "s3cret"}
	pres := startKamailio(t, kamailio.Options{Users: users})
	proxy := startKamailio(t, kamailio.Options{Users: users, Forward: pres.UDP, Challenge: "proxy"})
	p := newPublisher(t, Options{Server: "pbx.example:5060", OutboundProxy: proxy.UDP, Username: "pb", Password: "s3cret"})
	uri := "sip:1002@pbx.example"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w, err := kamailio.Watch(ctx, pres.UDP, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := send1(t, p, itemFor(uri, presence.DoNotDisturb, presence.ActPresenting)); err != nil {
		t.Fatalf("publish through the proxy: %v\nproxy:\n%s\npresence:\n%s", err, proxy.LogTail(20), pres.LogTail(20))
	}
	if _, err := w.WaitFor(ctx, func(n Notify) bool { return n.Note == "Presenting" }); err != nil {
		t.Fatal(err)
	}
}

// Wrong credentials: refused with a message naming the settings, never the password.
func TestKamailioWrongPassword(t *testing.T) {
	k := startKamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}})
	p := newPublisher(t, Options{Server: k.UDP, Username: "pb", Password: "wrong-pw"})
	err := send1(t, p, itemFor("sip:1003@pbx.example", presence.Busy, presence.ActBusy))
	if err == nil || !strings.Contains(err.Error(), "[SIP] Username and Password") || strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("err = %v", err)
	}
}

// Kamailio restarted (its publications gone): the next state's conditional PUBLISH
// is refused (Kamailio says 500, not 412) and the publisher starts over.
func TestKamailioLostPublicationStartsOver(t *testing.T) {
	dir := t.TempDir()
	k := startKamailio(t, kamailio.Options{Dir: dir})
	p := newPublisher(t, Options{Server: k.UDP})
	uri := "sip:1004@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	k.Stop()
	k2 := startKamailio(t, kamailio.Options{Dir: t.TempDir()})
	p.o.Server, p.dest = k2.UDP, k2.UDP // the same server come back on a new port
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w, err := kamailio.Watch(ctx, k2.UDP, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatalf("publish after the server lost the ETag: %v", err)
	}
	if _, err := w.WaitFor(ctx, func(n Notify) bool { return n.Note == "Away" }); err != nil {
		t.Fatal(err)
	}
}

func TestServerDownIsTargetDown(t *testing.T) {
	p := newPublisher(t, Options{Transport: "tcp", Server: "127.0.0.1:1", Timeout: time.Second})
	err := send1(t, p, itemFor("sip:1005@pbx.example", presence.Busy, presence.ActBusy))
	if !errors.Is(err, push.ErrTargetDown) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want ErrTargetDown naming the server", err)
	}
}

// BenchmarkPublishKamailio publishes b.N states for distinct users into Kamailio over UDP.
func BenchmarkPublishKamailio(b *testing.B) {
	kamailio.Require(b)
	k, err := kamailio.Start(context.Background(), kamailio.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Stop()
	p, err := New(Options{Server: k.UDP, Rate: 1e6, Concurrency: 64, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	items := make([]push.Item, b.N)
	for i := range items {
		items[i] = itemFor(fmt.Sprintf("sip:%d@pbx.example", 100000+i), presence.Busy, presence.ActInACall)
	}
	b.ResetTimer()
	start := time.Now()
	for i, err := range p.Send(context.Background(), items) {
		if err != nil {
			b.Fatalf("item %d: %v", i, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publish/s")
}
