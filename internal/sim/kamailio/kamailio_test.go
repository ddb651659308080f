package kamailio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/testkit"
)

const pidfInACall = `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="%s">
<tuple id="t1"><status><basic>open</basic></status><note>In a call</note></tuple>
<dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
</presence>
`

// publish is a hand-written PUBLISH, independent of the publisher under test.
type publish struct {
	uri     string
	route   string   // Route header value, or ""
	headers []string // extra "Name: value" lines
	body    bool     // send the PIDF "in a call" (false: a refresh without body)
	dialog  bool     // Event: dialog, and the body a dialog-info with a confirmed dialog
}

const dialogInACall = `<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="%s">
<dialog id="d1" direction="initiator"><state>confirmed</state></dialog>
</dialog-info>
`

// send sends p over UDP to addr and returns the final answer.
func (p publish) send(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "PUBLISH %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n", p.uri, conn.LocalAddr(), token())
	if p.route != "" {
		fmt.Fprintf(&b, "Route: %s\r\n", p.route)
	}
	event, kind, doc := "presence", "application/pidf+xml", pidfInACall
	if p.dialog {
		event, kind, doc = "dialog", "application/dialog-info+xml", dialogInACall
	}
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\nTo: <%s>\r\nCall-ID: %s\r\nCSeq: 1 PUBLISH\r\nEvent: %s\r\nExpires: 120\r\n", p.uri, token(), p.uri, token(), event)
	for _, h := range p.headers {
		b.WriteString(h + "\r\n")
	}
	body := ""
	if p.body {
		body = fmt.Sprintf(doc, p.uri)
		b.WriteString("Content-Type: " + kind + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	dst, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo([]byte(b.String()), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to PUBLISH %s at %s: %v", p.uri, addr, err)
		}
		if f := strings.Fields(string(buf[:n])); len(f) > 1 && f[1] >= "200" {
			return string(buf[:n])
		}
	}
}

// withCredentials answers the challenge in res (401 or 407) for user/password.
func (p publish) withCredentials(t *testing.T, res, user, password string) publish {
	t.Helper()
	name, reply := "WWW-Authenticate", "Authorization"
	if strings.HasPrefix(res, "SIP/2.0 407") {
		name, reply = "Proxy-Authenticate", "Proxy-Authorization"
	}
	ch := header(res, name)
	if !strings.HasPrefix(ch, "Digest ") {
		t.Fatalf("challenge without %s: %s", name, firstLine(res))
	}
	realm, nonce, qop := digestParam(ch, "realm"), digestParam(ch, "nonce"), digestParam(ch, "qop")
	ha1 := md5hex(user + ":" + realm + ":" + password)
	ha2 := md5hex("PUBLISH:" + p.uri)
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5`, user, realm, nonce, p.uri)
	if qop == "" {
		auth += fmt.Sprintf(`, response="%s"`, md5hex(ha1+":"+nonce+":"+ha2))
	} else {
		const nc, cnonce = "00000001", "0a4f113b"
		auth += fmt.Sprintf(`, qop=auth, nc=%s, cnonce="%s", response="%s"`, nc, cnonce, md5hex(ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+ha2))
	}
	q := p
	q.headers = append(append([]string(nil), p.headers...), reply+": "+auth)
	return q
}

func digestParam(v, name string) string {
	for _, part := range strings.Split(strings.TrimPrefix(v, "Digest "), ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		if strings.EqualFold(k, name) {
			return strings.Trim(val, `"`)
		}
	}
	return ""
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	needKamailio(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

func watch(t *testing.T, ctx context.Context, server, uri string) *Watcher {
	t.Helper()
	w, err := Watch(ctx, server, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func inACall(n Notify) bool {
	return n.Basic == "open" && len(n.Activities) == 1 && n.Activities[0] == "on-the-phone" && n.Note == "In a call"
}

func TestPublishReachesWatcher(t *testing.T) {
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := watch(t, ctx, s.UDP, "sip:alice@pbx.example")
	first, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("no NOTIFY after SUBSCRIBE: %v", err)
	}
	if !strings.HasPrefix(first.SubscriptionState, "active") || first.Basic == "open" {
		t.Errorf("first NOTIFY, before any PUBLISH = %+v, want active and not open", first)
	}
	res := publish{uri: "sip:alice@pbx.example", body: true}.send(t, s.UDP)
	if !strings.HasPrefix(res, "SIP/2.0 200") || header(res, "SIP-ETag") == "" {
		t.Fatalf("PUBLISH answered:\n%s", res)
	}
	n, err := w.WaitFor(ctx, func(n Notify) bool { return n.Basic == "open" })
	if err != nil {
		t.Fatalf("%v\n%s", err, s.LogTail(20))
	}
	if !inACall(n) {
		t.Errorf("NOTIFY = %+v, want basic open, on-the-phone, note \"In a call\"", n)
	}
}

// The presence server (not only the PBX) serves Event: dialog too, as BLF keys
// subscribe to it: a dialog-info PUBLISH reaches a dialog watcher, with the
// publications in the db_text table and in memory alike.
func TestDialogPublishReachesWatcher(t *testing.T) {
	for _, memory := range []bool{false, true} {
		t.Run(fmt.Sprintf("memory=%v", memory), func(t *testing.T) {
			s := start(t, Options{MemoryPresentities: memory})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			uri := "sip:dora@pbx.example"
			w, err := WatchEvent(ctx, s.UDP, uri, "dialog")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Close)
			res := publish{uri: uri, body: true, dialog: true}.send(t, s.UDP)
			if !strings.HasPrefix(res, "SIP/2.0 200") || header(res, "SIP-ETag") == "" {
				t.Fatalf("PUBLISH Event: dialog answered:\n%s", res)
			}
			if _, err := w.WaitFor(ctx, Notify.Confirmed); err != nil {
				t.Fatalf("%v\n%s", err, s.LogTail(20))
			}
			cfg, _ := os.ReadFile(filepath.Join(s.opts.Dir, "kamailio.cfg"))
			if got := strings.Contains(string(cfg), `modparam("presence", "publ_cache", 2)`); got != memory {
				t.Errorf("publ_cache 2 in kamailio.cfg: %v, want %v", got, memory)
			}
		})
	}
}

// A refresh with the ETag Kamailio gave keeps the publication; one with an ETag
// it does not know is refused. Kamailio 5.6 says 500 there, where RFC 3903
// wants 412: publishers must treat any failure as "publish from scratch".
func TestConditionalPublish(t *testing.T) {
	s := start(t, Options{})
	uri := "sip:carol@pbx.example"
	res := publish{uri: uri, body: true}.send(t, s.UDP)
	etag := header(res, "SIP-ETag")
	if !strings.HasPrefix(res, "SIP/2.0 200") || etag == "" {
		t.Fatalf("PUBLISH answered:\n%s", res)
	}
	res = publish{uri: uri, headers: []string{"SIP-If-Match: " + etag}}.send(t, s.UDP)
	if !strings.HasPrefix(res, "SIP/2.0 200") || header(res, "SIP-ETag") == "" {
		t.Errorf("refresh with SIP-If-Match %s answered:\n%s", etag, res)
	}
	res = publish{uri: uri, headers: []string{"SIP-If-Match: no-such-etag"}}.send(t, s.UDP)
	if strings.HasPrefix(res, "SIP/2.0 2") {
		t.Errorf("refresh with an unknown ETag answered %q, want a failure", firstLine(res))
	}
	t.Logf("unknown ETag: %s", firstLine(res))
}

func TestDigestAuth(t *testing.T) {
	users := map[string]string{"pb": "s3cret"}
	for _, c := range []struct {
		challenge, want string
	}{
		{"", "SIP/2.0 401"},
		{"www", "SIP/2.0 401"},
		{"proxy", "SIP/2.0 407"},
	} {
		t.Run("challenge="+c.challenge, func(t *testing.T) {
			s := start(t, Options{Users: users, Challenge: c.challenge})
			p := publish{uri: "sip:alice@pbx.example", body: true}
			res := p.send(t, s.UDP)
			if !strings.HasPrefix(res, c.want) {
				t.Fatalf("PUBLISH without credentials answered %q, want %s", firstLine(res), c.want)
			}
			if got := p.withCredentials(t, res, "pb", "s3cret").send(t, s.UDP); !strings.HasPrefix(got, "SIP/2.0 200") {
				t.Errorf("PUBLISH with the right credentials answered %q\n%s", firstLine(got), s.LogTail(10))
			}
			if got := p.withCredentials(t, res, "pb", "wrong").send(t, s.UDP); strings.HasPrefix(got, "SIP/2.0 2") {
				t.Errorf("PUBLISH with a wrong password answered %q", firstLine(got))
			}
		})
	}
	t.Run("subscribe needs no credentials", func(t *testing.T) {
		s := start(t, Options{Users: users})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		watch(t, ctx, s.UDP, "sip:alice@pbx.example")
	})
}

func TestTLSListener(t *testing.T) {
	s := start(t, Options{TLS: true})
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", s.CAFile)
	}
	for _, name := range []string{"127.0.0.1", "localhost"} {
		conn, err := tls.Dial("tcp", s.TLS, &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("TLS to Kamailio as %s with its CA: %v\n%s", name, err, s.LogTail(20))
		}
		conn.Close()
	}
}

func TestForwardingProxy(t *testing.T) {
	users := map[string]string{"pb": "s3cret"}
	for _, c := range []struct {
		name        string
		users       map[string]string
		watchViaHop bool // subscribe through the proxy too (Record-Route)
	}{
		{"open relay", nil, false},
		{"proxy authentication", users, false},
		{"watcher through the proxy", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pres := start(t, Options{})
			proxy := start(t, Options{Forward: pres.UDP, Users: c.users, Challenge: "proxy"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			uri := "sip:bob@pbx.example"
			watchAt := pres.UDP
			if c.watchViaHop {
				watchAt = proxy.UDP
			}
			w := watch(t, ctx, watchAt, uri)
			p := publish{uri: uri, route: "<sip:" + proxy.UDP + ";lr>", body: true}
			res := p.send(t, proxy.UDP)
			if c.users != nil {
				if !strings.HasPrefix(res, "SIP/2.0 407") {
					t.Fatalf("PUBLISH without credentials through the proxy answered %q, want 407", firstLine(res))
				}
				res = p.withCredentials(t, res, "pb", "s3cret").send(t, proxy.UDP)
			}
			if !strings.HasPrefix(res, "SIP/2.0 200") || header(res, "SIP-ETag") == "" {
				t.Fatalf("PUBLISH through the proxy answered:\n%s\nproxy log:\n%s", res, proxy.LogTail(20))
			}
			if _, err := w.WaitFor(ctx, inACall); err != nil {
				t.Fatalf("%v\nproxy log:\n%s\npresence log:\n%s", err, proxy.LogTail(20), pres.LogTail(20))
			}
		})
	}
}

// Restart without forget keeps the subscriptions: a watcher subscribed before
// gets the NOTIFY of a PUBLISH made after.
func TestRestartKeepsSubscriptions(t *testing.T) {
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := watch(t, ctx, s.UDP, "sip:dora@pbx.example")
	if _, err := w.Next(ctx); err != nil {
		t.Fatal(err)
	}
	s2, err := s.Restart(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Stop() })
	if res := (publish{uri: "sip:dora@pbx.example", body: true}).send(t, s2.UDP); !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("PUBLISH after the restart answered %q", firstLine(res))
	}
	if _, err := w.WaitFor(ctx, inACall); err != nil {
		t.Fatalf("watcher subscribed before the restart: %v\n%s", err, s2.LogTail(20))
	}
}

func TestStop(t *testing.T) {
	s := start(t, Options{})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.waitReady(context.Background(), 300*time.Millisecond); err == nil {
		t.Errorf("Kamailio still answers OPTIONS on %s after Stop", s.UDP)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
		want string
	}{
		{"no dir", Options{}, "Options.Dir is required"},
		{"challenge", Options{Dir: "x", Challenge: "basic"}, `Challenge "basic"`},
		{"forward", Options{Dir: "x", Forward: "127.0.0.1"}, "must be host:port"},
		{"pbx and forward", Options{Dir: "x", Forward: "127.0.0.1:5060", PBX: true}, "PBX and Forward"},
		{"domain", Options{Dir: "x", Domain: `a"b`}, "not a host name"},
		{"user", Options{Dir: "x", Users: map[string]string{"a:b": "pw"}}, "user name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.o.fill()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			for _, pw := range c.o.Users {
				if strings.Contains(err.Error(), pw) {
					t.Fatal("the error shows a password")
				}
			}
		})
	}
}

func TestParseNotify(t *testing.T) {
	raw := "NOTIFY sip:w@127.0.0.1 SIP/2.0\r\nSubscription-State: active;expires=600\r\nCSeq: 2 NOTIFY\r\n\r\n" +
		fmt.Sprintf(pidfInACall, "sip:alice@pbx.example")
	n := parseNotify(raw)
	if !inACall(n) || n.SubscriptionState != "active;expires=600" || !strings.HasPrefix(n.Raw, "<?xml") {
		t.Errorf("parseNotify = %+v", n)
	}
	if n := parseNotify("NOTIFY sip:w SIP/2.0\r\nSubscription-State: terminated\r\n\r\n"); n.Basic != "" || n.SubscriptionState != "terminated" {
		t.Errorf("empty NOTIFY parsed as %+v", n)
	}
	// A bare LF or CR ends a header line: reply must not echo it inside a value.
	if v := headers("NOTIFY sip:w SIP/2.0\r\nCSeq: 2 NOTIFY\nX: y\rCall-ID: c\r\n\r\n", "CSeq"); len(v) != 1 || v[0] != "2 NOTIFY" {
		t.Errorf("CSeq read as %q", v)
	}
}

// The Expires of a SUBSCRIBE's 2xx is kept only as RFC 3261 delta-seconds; the
// refresh period made from it stays positive.
func TestGrantedExpires(t *testing.T) {
	for v, want := range map[string]int{"300": 300, " 0 ": 0, "4294967295": 1<<32 - 1, "4294967296": 600,
		"9223372037": 600, "-1": 600, "NaN": 600, "": 600} {
		got := grantedExpires("SIP/2.0 200 OK\r\nExpires: "+v+"\r\nCSeq: 1 SUBSCRIBE\r\n\r\n", 600)
		if got != want || time.Duration(max(got, 2))*time.Second/2 <= 0 {
			t.Errorf("Expires %q kept as %d; want %d", v, got, want)
		}
	}
}

// Without Kamailio, Require skips a developer's run but fails CI's.
func TestRequireFailsUnderCI(t *testing.T) {
	testkit.CheckToolUnderCI(t, "KAMAILIO", "apt-get install", func(tb testing.TB) { needKamailio(tb) })
}

// needKamailio skips a test without Kamailio, or fails it under CI=true.
func needKamailio(t testing.TB) string {
	t.Helper()
	return testkit.Need(t, "the Kamailio integration test", Find)
}

func TestParseNotifyDialogInfo(t *testing.T) {
	raw := "NOTIFY sip:watcher@127.0.0.1 SIP/2.0\r\nEvent: dialog\r\nSubscription-State: active;expires=600\r\n\r\n" +
		`<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:bob@pbx.test">` +
		`<dialog id="a" direction="recipient"><state>terminated</state></dialog>` +
		`<dialog id="b"><state event="remote">confirmed</state><local><identity>sip:bob@pbx.test</identity></local></dialog></dialog-info>`
	n := parseNotify(raw)
	if want := []string{"terminated", "confirmed"}; !slices.Equal(n.DialogStates, want) {
		t.Fatalf("DialogStates = %q; want %q", n.DialogStates, want)
	}
	if !n.Confirmed() {
		t.Error("Confirmed() = false with a confirmed dialog")
	}
	n.DialogStates = n.DialogStates[:1]
	if n.Confirmed() {
		t.Error("Confirmed() = true with only a terminated dialog")
	}
}
