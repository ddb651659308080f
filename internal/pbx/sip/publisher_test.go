package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// TestMain keeps sipgo's package-wide logger (a few of its messages ignore the
// loggers a user agent is given) out of the test output; set before any test
// starts a user agent.
func TestMain(m *testing.M) {
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

func itemFor(uri string, a presence.Availability, act presence.Activity) delivery.Item {
	s := presence.State{UPN: "u@contoso.example", Availability: a, Activity: act}
	return delivery.Item{User: users.User{UPN: "u@contoso.example", SIPURI: uri}, State: s,
		Mapped: presence.DefaultMapping().Map(s), Reason: delivery.ReasonChange}
}

// pk is the key of uri's Event: presence publication; dk of its Event: dialog one.
func pk(uri string) Key { return Key{URI: uri, Event: EventPresence} }
func dk(uri string) Key { return Key{URI: uri, Event: EventDialog} }

func removal(uri string) delivery.Item {
	it := itemFor(uri, "", "")
	it.Reason, it.Mapped = delivery.ReasonRemove, presence.Mapped{}
	return it
}

// filled is s with DefaultSettings where s leaves a setting zero, as config's
// [SIP] with the keys a test does not set.
func filled(s Settings) Settings {
	d := DefaultSettings()
	if s.Transport == "" {
		s.Transport = d.Transport
	}
	if s.Event == "" {
		s.Event = d.Event
	}
	if s.Expires == 0 {
		s.Expires = d.Expires
	}
	if s.Concurrency == 0 {
		s.Concurrency = d.Concurrency
	}
	if s.Rate == 0 {
		s.Rate = d.Rate
	}
	if s.Timeout == 0 {
		s.Timeout = d.Timeout
	}
	return s
}

func newPublisher(t testing.TB, o Options) *Publisher {
	t.Helper()
	o.Settings = filled(o.Settings)
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

func send1(t *testing.T, p *Publisher, it delivery.Item) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Send(ctx, []delivery.Item{it})[0]
}

func (p *Publisher) counts() counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// server picks the fake PBX's address for a transport.
func (f *fakePBX) server(transport string) string {
	return map[string]string{"udp": f.UDP, "tcp": f.TCP, "tls": f.TLS}[transport]
}

// forTransport gives the options that reach f over transport.
func forTransport(f *fakePBX, transport string) Options {
	o := Options{Settings: Settings{Transport: transport, Server: f.server(transport)}}
	if transport == "tls" {
		o.CAFile, o.ServerName = f.CAFile, "pbx.test"
	}
	return o
}

// checkPublish asserts what every PUBLISH must carry.
func checkPublish(t *testing.T, r seen, uri, expires string, withBody bool) {
	t.Helper()
	if r.Method != "PUBLISH" || r.RequestURI != uri || r.h("Event") != "presence" || r.h("Expires") != expires {
		t.Errorf("got %s %s Event=%q Expires=%q, want PUBLISH %s Event=presence Expires=%s",
			r.Method, r.RequestURI, r.h("Event"), r.h("Expires"), uri, expires)
	}
	if !strings.Contains(r.h("To"), "<"+uri+">") {
		t.Errorf("To %q, want the user's URI %s", r.h("To"), uri)
	}
	if withBody {
		if r.h("Content-Type") != "application/pidf+xml" || !strings.Contains(r.Body, `entity="`+uri+`"`) {
			t.Errorf("Content-Type %q, body:\n%s", r.h("Content-Type"), r.Body)
		}
	} else if r.Body != "" || r.h("Content-Type") != "" {
		t.Errorf("want no body, got Content-Type %q and\n%s", r.h("Content-Type"), r.Body)
	}
}

// A digest challenge (401 from the server, 407 from a proxy) over each transport
// is answered on the same Call-ID with the next CSeq; the next PUBLISH (a
// modification with SIP-If-Match) carries credentials at once.
func TestDigestChallengeThenModify(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		for _, code := range []int{401, 407} {
			t.Run(fmt.Sprintf("%s/%d", transport, code), func(t *testing.T) {
				gate := newGate(code, "pb", "s3cret")
				f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
					if c := gate.check(r); c != nil {
						return *c
					}
					return f.lockedOK(r)
				})
				o := forTransport(f, transport)
				o.Username, o.Password = "pb", "s3cret"
				p := newPublisher(t, o)
				uri := "sip:1001@pbx.example"
				if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
					t.Fatal(err)
				}
				reqs := f.requests()
				if len(reqs) != 2 {
					t.Fatalf("%d requests, want 2 (challenged, answered)", len(reqs))
				}
				_, credName := authHeaders(code)
				first, second := reqs[0], reqs[1]
				if first.h(credName) != "" || second.h(credName) == "" {
					t.Errorf("%s: first %q, second %q; want none, then an answer", credName, first.h(credName), second.h(credName))
				}
				if first.Transport != strings.ToUpper(transport) {
					t.Errorf("arrived over %s, want %s", first.Transport, transport)
				}
				if first.h("Call-ID") != second.h("Call-ID") || !nextCSeq(first.h("CSeq"), second.h("CSeq")) {
					t.Errorf("answer: Call-ID %q -> %q, CSeq %q -> %q; want the same Call-ID and the next CSeq",
						first.h("Call-ID"), second.h("Call-ID"), first.h("CSeq"), second.h("CSeq"))
				}
				for _, r := range reqs {
					checkPublish(t, r, uri, "3600", true)
					if r.h("SIP-If-Match") != "" {
						t.Errorf("initial PUBLISH carries SIP-If-Match %q", r.h("SIP-If-Match"))
					}
				}
				if !strings.Contains(second.Body, "<rpid:on-the-phone/>") || !strings.Contains(second.Body, "In a call") {
					t.Errorf("body:\n%s", second.Body)
				}

				if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
					t.Fatal(err)
				}
				reqs = f.requests()
				if len(reqs) != 3 {
					t.Fatalf("%d requests, want 3: the modification should reuse the nonce", len(reqs))
				}
				mod := reqs[2]
				checkPublish(t, mod, uri, "3600", true)
				if mod.h("SIP-If-Match") != "etag-1" || !strings.Contains(mod.Body, "<rpid:away/>") || mod.h("Call-ID") == first.h("Call-ID") {
					t.Errorf("modification: SIP-If-Match %q (want etag-1), Call-ID %q, body:\n%s", mod.h("SIP-If-Match"), mod.h("Call-ID"), mod.Body)
				}
				if pub := p.publication(pk(uri)); pub == nil || pub.ETag != "etag-2" || p.Published() != 1 {
					t.Errorf("publication %+v, %d published; want etag-2, 1", pub, p.Published())
				}
				if c := p.counts(); c.initial != 1 || c.modified != 1 {
					t.Errorf("counts %+v", c)
				}
			})
		}
	}
}

func nextCSeq(a, b string) bool {
	var na, nb int
	var ma, mb string
	fmt.Sscanf(a, "%d %s", &na, &ma)
	fmt.Sscanf(b, "%d %s", &nb, &mb)
	return nb == na+1 && ma == "PUBLISH" && mb == "PUBLISH"
}

// A server that makes the kept nonce stale gets a fresh answer; wrong or
// missing credentials give an error naming the settings, never the password.
func TestDigestStaleAndWrongCredentials(t *testing.T) {
	gate := newGate(401, "pb", "s3cret")
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		if c := gate.check(r); c != nil {
			return *c
		}
		return f.lockedOK(r)
	})
	uri := "sip:1001@pbx.example"

	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Username: "pb", Password: "s3cret"}})
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActBusy)); err != nil {
		t.Fatal(err)
	}
	gate.rotate()
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatalf("after a stale nonce: %v", err)
	}
	if n := len(f.requests()); n != 4 {
		t.Errorf("%d requests, want 4 (challenged, answered; stale nonce, answered again)", n)
	}

	cases := []struct {
		name, user, pw, want string
		requests             int
	}{
		{"wrong password", "pb", "not-the-password", `check [SIP] Username and Password`, 2},
		{"no credentials", "", "", "set [SIP] Username and Password", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(f.requests())
			p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Username: c.user, Password: secret.Value(c.pw)}})
			err := send1(t, p, itemFor("sip:1002@pbx.example", presence.Busy, presence.ActBusy))
			var perm *delivery.PermanentError
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.As(err, &perm) || errors.Is(err, delivery.ErrTargetDown) {
				t.Fatalf("err = %v; want a retried error saying %q", err, c.want)
			}
			if c.pw != "" && strings.Contains(err.Error(), c.pw) {
				t.Errorf("the error shows the password: %v", err)
			}
			if n := len(f.requests()) - before; n != c.requests {
				t.Errorf("%d requests, want %d", n, c.requests)
			}
		})
	}
}

// A refused conditional PUBLISH (412 as RFC 3903 says, 500 as Kamailio 5.6 says)
// forgets the entity tag and publishes the new state afresh, once.
func TestRefusedConditionalStartsOver(t *testing.T) {
	for _, code := range []int{412, 500} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
				if r.h("SIP-If-Match") != "" {
					return reply{Code: code, Reason: "Refused"}
				}
				return f.lockedOK(r)
			})
			p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}})
			uri := "sip:1001@pbx.example"
			if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
				t.Fatal(err)
			}
			if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()
			if len(reqs) != 3 {
				t.Fatalf("%d requests, want 3 (initial, refused conditional, afresh)", len(reqs))
			}
			if reqs[1].h("SIP-If-Match") != "etag-1" || reqs[2].h("SIP-If-Match") != "" || !strings.Contains(reqs[2].Body, "<rpid:away/>") {
				t.Errorf("conditional If-Match %q; afresh If-Match %q, body:\n%s", reqs[1].h("SIP-If-Match"), reqs[2].h("SIP-If-Match"), reqs[2].Body)
			}
			if pub := p.publication(pk(uri)); pub == nil || pub.ETag != "etag-2" {
				t.Errorf("kept %+v, want etag-2", pub)
			}
			if c := p.counts(); c.restarted != 1 {
				t.Errorf("counts %+v", c)
			}
		})
	}
}

// Removal sends SIP-If-Match, Expires: 0 and no body; without a publication there
// is nothing to send; a server that no longer has it is not an error.
func TestRemove(t *testing.T) {
	refuse := false
	var mu sync.Mutex
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		defer mu.Unlock()
		if refuse && r.h("SIP-If-Match") != "" {
			return reply{Code: 412, Reason: "Conditional Request Failed"}
		}
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Server: f.TCP, Transport: "tcp"}})
	uri := "sip:1001@pbx.example"

	if err := send1(t, p, removal(uri)); err != nil || len(f.requests()) != 0 {
		t.Fatalf("removing what was never published: err %v, %d requests; want nil, none", err, len(f.requests()))
	}
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p, removal(uri)); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	checkPublish(t, reqs[1], uri, "0", false)
	if reqs[1].h("SIP-If-Match") != "etag-1" || p.Published() != 0 {
		t.Errorf("removal If-Match %q (want etag-1); %d still published", reqs[1].h("SIP-If-Match"), p.Published())
	}
	if err := send1(t, p, removal(uri)); err != nil || len(f.requests()) != 2 {
		t.Errorf("second removal: err %v, %d requests; want nil and no request", err, len(f.requests()))
	}

	// The server lost it: 412 to the removal still counts as removed.
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	if err := send1(t, p, removal(uri)); err != nil || p.Published() != 0 {
		t.Errorf("removal refused with 412: err %v, %d published; want nil, 0", err, p.Published())
	}
}

// Run refreshes a publication at 80% of the lifetime the server granted, with
// SIP-If-Match and no body; a refused refresh publishes the last state afresh.
func TestRunRefreshes(t *testing.T) {
	var mu sync.Mutex
	grant, refuseRefresh := "30", false
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		defer mu.Unlock()
		if refuseRefresh && r.h("SIP-If-Match") != "" {
			return reply{Code: 412, Reason: "Conditional Request Failed"}
		}
		a := f.lockedOK(r)
		a.Headers["Expires"] = grant // the server decides the lifetime
		return a
	})
	clk := newStepClock()
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	if d := clk.nextSleep(t); d != maxRefreshWait {
		t.Errorf("with nothing published Run sleeps %s, want %s", d, maxRefreshWait)
	}
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	// Due (at 80% of 30 s) before Run meant to look again: it wakes and replans.
	if d := clk.nextSleep(t); d != 24*time.Second {
		t.Fatalf("Run sleeps %s, want 24s (80%% of the 30 s granted)", d)
	}
	mu.Lock()
	grant = "3600"
	mu.Unlock()
	clk.step(24 * time.Second)
	clk.nextSleep(t)
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2 (publish, refresh)", len(reqs))
	}
	checkPublish(t, reqs[1], uri, "3600", false)
	if reqs[1].h("SIP-If-Match") != "etag-1" {
		t.Errorf("refresh If-Match %q, want etag-1", reqs[1].h("SIP-If-Match"))
	}
	if pub := p.publication(pk(uri)); pub.ETag != "etag-2" || pub.Lifetime != time.Hour {
		t.Errorf("after the refresh: %+v", pub)
	}

	// Now granted an hour: nothing until 48 minutes have passed, then a refresh,
	// refused this time, so the last state is published afresh.
	mu.Lock()
	refuseRefresh = true
	mu.Unlock()
	for i := 1; i <= 48; i++ {
		if n := len(f.requests()); n != 2 {
			t.Fatalf("%d requests after %d minutes, want no refresh before 48", n, i-1)
		}
		clk.step(time.Minute)
		clk.nextSleep(t)
	}
	reqs = f.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	checkPublish(t, reqs[2], uri, "3600", false)
	checkPublish(t, reqs[3], uri, "3600", true)
	if reqs[3].h("SIP-If-Match") != "" || reqs[3].Body != reqs[0].Body {
		t.Errorf("after a refused refresh: If-Match %q, body\n%s\nwant none and the last state\n%s", reqs[3].h("SIP-If-Match"), reqs[3].Body, reqs[0].Body)
	}
	if c := p.counts(); c.refreshed != 1 || c.restarted != 1 || p.Published() != 1 {
		t.Errorf("counts %+v, %d published", c, p.Published())
	}
}

// A server that does not answer or refuses the connection is down: the error
// wraps delivery.ErrTargetDown and names the transport and the address.
func TestServerDown(t *testing.T) {
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			addr := "127.0.0.1:1" // nothing listens there
			p := newPublisher(t, Options{Settings: Settings{Transport: transport, Server: addr, Timeout: 300 * time.Millisecond}})
			err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy))
			if !errors.Is(err, delivery.ErrTargetDown) || !strings.Contains(err.Error(), addr) ||
				!strings.Contains(err.Error(), "over "+transport) || !strings.Contains(err.Error(), "[SIP] Server") {
				t.Fatalf("err = %v; want ErrTargetDown naming %s over %s and [SIP] Server", err, addr, transport)
			}
		})
	}
}

// Through an outbound proxy: the request goes to the proxy with a preloaded Route
// and the user's URI as Request-URI.
func TestOutboundProxy(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			proxy := startPBX(t, nil)
			p := newPublisher(t, Options{Settings: Settings{Transport: transport, Server: "pbx.example:5060", OutboundProxy: proxy.server(transport)}})
			uri := "sip:1001@pbx.example"
			if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
				t.Fatal(err)
			}
			reqs := proxy.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests at the proxy, want 1", len(reqs))
			}
			want := "<sip:" + proxy.server(transport) + ";lr>"
			if transport != "udp" {
				want = "<sip:" + proxy.server(transport) + ";lr;transport=" + transport + ">"
			}
			if reqs[0].h("Route") != want || reqs[0].RequestURI != uri {
				t.Errorf("Route %q, Request-URI %q; want %s, %s", reqs[0].h("Route"), reqs[0].RequestURI, want, uri)
			}
			checkPublish(t, reqs[0], uri, "3600", true)
		})
	}
}

// What each refusal means to the dispatcher.
func TestRefusals(t *testing.T) {
	cases := []struct {
		code       int
		permanent  bool
		down       bool
		wantInText string
	}{
		{404, true, false, "check the SIP URI in the users file"},
		{403, true, false, "[SIP] From"},
		{489, true, false, "takes no presence publications (Event: presence); for a presence server serving BLF keys (Kamailio or OpenSIPS with presence_dialoginfo) switch to [SIP] Event = dialog; for Asterisk or FreePBX"},
		{405, true, false, "does not take PUBLISH"},
		{500, false, false, "500"},
		{503, false, true, "503"},
		{408, false, true, "408"},
		{480, false, false, "480"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			f := startPBX(t, func(f *fakePBX, r seen, n int) reply { return reply{Code: c.code, Reason: "No"} })
			p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}})
			err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy))
			var perm *delivery.PermanentError
			if err == nil || errors.As(err, &perm) != c.permanent || errors.Is(err, delivery.ErrTargetDown) != c.down ||
				!strings.Contains(err.Error(), c.wantInText) || !strings.Contains(err.Error(), "sip:1001@pbx.example") {
				t.Fatalf("err = %v; want permanent=%v down=%v, saying %q and the URI", err, c.permanent, c.down, c.wantInText)
			}
			if p.Published() != 0 {
				t.Errorf("%d published after a refusal", p.Published())
			}
		})
	}
}

// 423 Interval Too Brief: asked again with the server's Min-Expires.
func TestIntervalTooBrief(t *testing.T) {
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		if r.h("Expires") != "7200" {
			return reply{Code: 423, Reason: "Interval Too Brief", Headers: map[string]string{"Min-Expires": "7200"}}
		}
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Expires: time.Minute}})
	if err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy)); err != nil {
		t.Fatal(err)
	}
	if pub := p.publication(pk("sip:1001@pbx.example")); pub == nil || pub.Lifetime != 2*time.Hour || len(f.requests()) != 2 {
		t.Errorf("publication %+v after %d requests; want a 2 h lifetime after 2", pub, len(f.requests()))
	}
}

// Items without a usable SIP URI are refused for good, naming the user and the fix.
func TestBadSIPURI(t *testing.T) {
	f := startPBX(t, nil)
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}})
	for _, c := range []struct{ uri, want string }{
		{"", "add a SIP URI column in the users file"},
		{"mailto:alice@contoso.example", "write it as sip:user@host"},
	} {
		it := itemFor(c.uri, presence.Busy, presence.ActBusy)
		it.User.UPN = "alice@contoso.example"
		err := send1(t, p, it)
		var perm *delivery.PermanentError
		if !errors.As(err, &perm) || !strings.Contains(err.Error(), "alice@contoso.example") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SIP URI %q: err = %v; want a permanent error naming the UPN and saying %q", c.uri, err, c.want)
		}
	}
	if len(f.requests()) != 0 {
		t.Errorf("%d requests sent", len(f.requests()))
	}
}

// [SIP] From replaces the From identity; To and Request-URI stay the user's.
func TestFrom(t *testing.T) {
	f := startPBX(t, nil)
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, From: "sip:presencebridge@pbx.example"}})
	if err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy)); err != nil {
		t.Fatal(err)
	}
	r := f.requests()[0]
	if !strings.Contains(r.h("From"), "<sip:presencebridge@pbx.example>") || !strings.Contains(r.h("From"), "tag=") {
		t.Errorf("From %q", r.h("From"))
	}
	checkPublish(t, r, "sip:1001@pbx.example", "3600", true)
}

// TLS verifies the server against the system roots plus [SIP] CAFile, by
// [SIP] ServerName when given; a failed check says which settings to look at.
func TestTLSVerification(t *testing.T) {
	f := startPBX(t, nil)
	cases := []struct {
		name             string
		caFile, srvName  string
		wantErr, errText string
	}{
		{"by CA file and name", f.CAFile, "pbx.test", "", ""},
		{"no CA file", "", "pbx.test", "x509", "[SIP] CAFile"},
		{"name not in the certificate", f.CAFile, "", "x509", "[SIP] ServerName"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPublisher(t, Options{Settings: Settings{Transport: "tls", Server: f.TLS, CAFile: c.caFile, ServerName: c.srvName}})
			err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy))
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), c.errText) {
				t.Fatalf("err = %v; want %q and %q", err, c.wantErr, c.errText)
			}
		})
	}
}

// New takes Settings as config checked them (the transport, host:port: config's
// tests); it refuses incomplete ones, and what it cannot use: a From that is no
// SIP URI, a CA file it cannot read.
func TestNewRefusesBadOptions(t *testing.T) {
	withDefaults := func(s Settings) Options { return Options{Settings: filled(s)} }
	cases := []struct {
		o    Options
		want string
	}{
		{Options{Settings: Settings{Server: "pbx.example:5060"}}, "incomplete Settings"},
		{withDefaults(Settings{}), "incomplete Settings"},
		{withDefaults(Settings{Server: "pbx.example:5060", From: "presencebridge"}), "[SIP] From"},
		{withDefaults(Settings{Transport: "tls", Server: "pbx.example:5061", CAFile: "/nonexistent/ca.pem"}), "[SIP] CAFile"},
	}
	for _, c := range cases {
		p, err := New(c.o)
		if err == nil {
			p.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v; want an error saying %q", c.o, err, c.want)
		}
	}
}

// Send keeps at most Concurrency transactions in flight.
func TestConcurrencyBound(t *testing.T) {
	const limit = 3
	var (
		mu       sync.Mutex
		inflight int
		peak     int
		full     = make(chan struct{})
	)
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		if inflight == limit {
			close(full)
			full = make(chan struct{})
		}
		wait := full
		mu.Unlock()
		// Hold each answer until limit requests are waiting (or a while passes),
		// so a publisher that allowed more would show it.
		select {
		case <-wait:
		case <-time.After(500 * time.Millisecond):
		}
		mu.Lock()
		inflight-- // before answering, so the next request cannot overlap
		mu.Unlock()
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Transport: "tcp", Server: f.TCP, Concurrency: limit}})
	items := make([]delivery.Item, 3*limit)
	for i := range items {
		items[i] = itemFor(fmt.Sprintf("sip:%d@pbx.example", 1000+i), presence.Busy, presence.ActBusy)
	}
	for i, err := range p.Send(context.Background(), items) {
		if err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != limit {
		t.Errorf("peak %d transactions in flight, want %d", peak, limit)
	}
	if p.Published() != len(items) {
		t.Errorf("%d published, want %d", p.Published(), len(items))
	}
}

// memStore is an ETagStore in memory.
type memStore struct {
	mu      sync.Mutex
	pubs    map[Key]Publication
	batches int
}

func (m *memStore) LoadPublications() (map[Key]Publication, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[Key]Publication{}
	for k, v := range m.pubs {
		out[k] = v
	}
	return out, nil
}

func (m *memStore) SavePublications(pubs map[Key]*Publication) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches++
	for k, v := range pubs {
		if v == nil {
			delete(m.pubs, k)
		} else {
			m.pubs[k] = *v
		}
	}
	return nil
}

// Publications kept in an ETagStore survive a restart: the new publisher
// modifies or removes them rather than leaving second ones behind. The store is
// written once per Send.
func TestETagStoreAcrossRestart(t *testing.T) {
	f := startPBX(t, nil)
	mem := &memStore{pubs: map[Key]Publication{
		pk("sip:9@pbx.example"): {ETag: "other-server", Expires: time.Now().Add(time.Hour), Transport: "udp", Dest: "10.0.0.1:5060"},
	}}
	var store ETagStore = mem
	const wantWrites = 1
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}, ETags: store})
	items := []delivery.Item{itemFor("sip:1@pbx.example", presence.Busy, presence.ActBusy), itemFor("sip:2@pbx.example", presence.Away, presence.ActAway)}
	for _, err := range p.Send(context.Background(), items) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if mem.batches != wantWrites || len(mem.pubs) != 3 {
		t.Fatalf("%d writes, %d kept; want %d writes, 3 kept", mem.batches, len(mem.pubs), wantWrites)
	}
	p.Close()

	p2 := newPublisher(t, Options{Settings: Settings{Server: f.UDP}, ETags: store})
	if p2.Published() != 2 {
		t.Errorf("after the restart %d publications, want 2 (the one for another server ignored)", p2.Published())
	}
	if err := send1(t, p2, itemFor("sip:1@pbx.example", presence.Offline, presence.ActOffline)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p2, removal("sip:2@pbx.example")); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 4 || reqs[2].h("SIP-If-Match") == "" || reqs[3].h("SIP-If-Match") == "" || reqs[3].h("Expires") != "0" {
		t.Fatalf("after the restart: %d requests, want a modification and a removal with SIP-If-Match", len(reqs))
	}
	if _, ok := mem.pubs[pk("sip:2@pbx.example")]; ok || mem.pubs[pk("sip:1@pbx.example")].ETag != "etag-3" {
		t.Errorf("kept %+v", mem.pubs)
	}
}

// A PUBLISH under way when Send's context ends (a shutdown) still takes its
// answer and keeps the entity tag, so the next start modifies the publication
// instead of leaving the server a stale second one.
func TestShutdownKeepsETagOfPublishInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		close(arrived)
		<-release
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Transport: "tcp", Server: f.TCP}})
	uri := "sip:1001@pbx.example"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []error, 1)
	go func() { done <- p.Send(ctx, []delivery.Item{itemFor(uri, presence.Busy, presence.ActInACall)}) }()
	<-arrived
	cancel()
	close(release)
	<-done
	if pub := p.publication(pk(uri)); pub == nil || pub.ETag != "etag-1" {
		t.Fatalf("after the shutdown the publication is %+v; want etag-1 kept", pub)
	}
}

// An Expires or Min-Expires beyond RFC 3261's 2**32-1 seconds is not a lifetime:
// the publication keeps the one asked for, and a 423 with such a Min-Expires is
// reported rather than asked again. (9223372037 s used to overflow into a
// negative lifetime: a publication refreshed every second without end.)
func TestExpiresOutOfRange(t *testing.T) {
	for _, v := range []string{"4294967296", "9223372037", "99999999999999999999", "-60", "60s"} {
		f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
			rep := f.lockedOK(r)
			rep.Headers["Expires"] = v
			return rep
		})
		p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Expires: time.Minute}})
		if err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy)); err != nil {
			t.Fatal(err)
		}
		if pub := p.publication(pk("sip:1001@pbx.example")); pub == nil {
			t.Errorf("Expires %s granted: no publication kept", v)
		} else if pub.Lifetime != time.Minute {
			t.Errorf("Expires %s granted: lifetime %v kept; want the 1m asked for", v, pub.Lifetime)
		}

		f = startPBX(t, func(f *fakePBX, r seen, n int) reply {
			return reply{Code: 423, Reason: "Interval Too Brief", Headers: map[string]string{"Min-Expires": v}}
		})
		p = newPublisher(t, Options{Settings: Settings{Server: f.UDP, Expires: time.Minute}})
		if err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActBusy)); err == nil || len(f.requests()) != 1 {
			t.Errorf("Min-Expires %s: %d requests, error %v; want one, refused", v, len(f.requests()), err)
		}
	}
}

// A challenge whose realm, nonce or opaque the answer could not carry back
// unchanged (the digest package writes Go escapes such as \t for a tab, which a
// server reads as "t") is refused as such, not answered with a digest the server
// must reject as wrong credentials.
func TestChallengeThatCannotBeEchoed(t *testing.T) {
	for _, chal := range []string{"Digest realm=\"pbx\", nonce=\"a\tb\"", "Digest realm=\"p\x00bx\", nonce=\"n\"",
		"Digest realm=\"pbx\", nonce=\"n\", opaque=\"\x7f\""} {
		msg, err := sip.ParseMessage([]byte("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: " + chal + "\r\nContent-Length: 0\r\n\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		var d digestCache
		if _, err := d.learn(msg.(*sip.Response)); err == nil || !strings.Contains(err.Error(), "cannot carry back") {
			t.Errorf("%q: %v; want it refused as not echoable", chal, err)
		}
	}
	var d digestCache
	msg, _ := sip.ParseMessage([]byte("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"Büro 2\", nonce=\"a\\\"b\"\r\nContent-Length: 0\r\n\r\n"))
	if _, err := d.learn(msg.(*sip.Response)); err != nil {
		t.Errorf("a realm with a space and an umlaut, a nonce with an escaped quote: %v", err)
	}
}

// A refresh round that fails is tried again after 10 s, then 20 s, ... (the one
// backoff schedule, ±20%), and on the plan again once a round succeeds.
func TestRunRefreshRetryBacksOff(t *testing.T) {
	var mu sync.Mutex
	failing := false
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return reply{Code: 503, Reason: "Service Unavailable"}
		}
		a := f.lockedOK(r)
		a.Headers["Expires"] = "30"
		return a
	})
	clk := newStepClock()
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP}, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	clk.nextSleep(t)
	if err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	if d := clk.nextSleep(t); d != 24*time.Second {
		t.Fatalf("Run sleeps %s, want 24s", d)
	}
	mu.Lock()
	failing = true
	mu.Unlock()
	clk.step(24 * time.Second)
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		d := clk.nextSleep(t)
		if d < want*8/10 || d > want*12/10 {
			t.Fatalf("after a failed round Run sleeps %s, want %s ±20%%", d, want)
		}
		if i == 2 { // the server answers again for the next round
			mu.Lock()
			failing = false
			mu.Unlock()
		}
		clk.step(d)
	}
	if d := clk.nextSleep(t); d != 24*time.Second {
		t.Fatalf("after a good round Run sleeps %s, want the plan again (24s)", d)
	}
}
