package sip

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// seen is one request the fake PBX received.
type seen struct {
	Transport  string // UDP, TCP or TLS
	RequestURI string
	Method     string
	Headers    map[string]string // lower-case name -> value (the first)
	Body       string
}

func (s seen) h(name string) string { return s.Headers[strings.ToLower(name)] }

// reply is what the script answers.
type reply struct {
	Code    int
	Reason  string
	Headers map[string]string
}

// fakePBX is a SIP server on loopback, built with sipgo's server, listening on
// UDP, TCP and TLS (its certificate is for the name "pbx.test" only, signed by a
// CA written to CAFile). Its script answers each request; it records them all.
type fakePBX struct {
	UDP, TCP, TLS string
	CAFile        string

	mu     sync.Mutex
	reqs   []seen
	etags  int
	script func(f *fakePBX, r seen, n int) reply
}

// ok is a 200 carrying a fresh SIP-ETag ("etag-1", "etag-2", ...) and the Expires asked for.
func (f *fakePBX) ok(r seen) reply {
	f.etags++
	exp := r.h("Expires")
	if exp == "" {
		exp = "3600"
	}
	return reply{Code: 200, Reason: "OK", Headers: map[string]string{"SIP-ETag": fmt.Sprintf("etag-%d", f.etags), "Expires": exp}}
}

func startPBX(t *testing.T, script func(f *fakePBX, r seen, n int) reply) *fakePBX {
	t.Helper()
	f := &fakePBX{script: script}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("fakepbx"),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slog.New(slog.DiscardHandler))),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slog.New(slog.DiscardHandler))))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnPublish(f.handle)
	srv.OnOptions(f.handle)

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := testkit.NewCA(t, pki.Options{CommonName: "fake PBX test CA"})
	cert := testkit.Issue(t, ca, pki.Options{DNSNames: []string{"pbx.test"}}).TLS()
	f.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f.CAFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsL := tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	f.UDP, f.TCP, f.TLS = udp.LocalAddr().String(), tcp.Addr().String(), tl.Addr().String()
	go srv.ServeUDP(udp)
	go srv.ServeTCP(tcp)
	go srv.ServeTLS(tlsL)
	t.Cleanup(func() {
		udp.Close()
		tcp.Close()
		tlsL.Close()
		ua.Close()
	})
	return f
}

func (f *fakePBX) handle(req *sip.Request, tx sip.ServerTransaction) {
	r := seen{Transport: req.Transport(), RequestURI: req.Recipient.String(), Method: string(req.Method),
		Headers: map[string]string{}, Body: string(req.Body())}
	for _, h := range req.Headers() {
		if _, dup := r.Headers[strings.ToLower(h.Name())]; !dup {
			r.Headers[strings.ToLower(h.Name())] = h.Value()
		}
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	n := len(f.reqs)
	f.mu.Unlock()
	var a reply
	if f.script != nil {
		a = f.script(f, r, n)
	} else {
		f.mu.Lock()
		a = f.ok(r)
		f.mu.Unlock()
	}
	res := sip.NewResponseFromRequest(req, a.Code, a.Reason, nil)
	for k, v := range a.Headers {
		res.AppendHeader(sip.NewHeader(k, v))
	}
	_ = tx.Respond(res)
}

// lockedOK is f.ok for scripts (which run without f.mu).
func (f *fakePBX) lockedOK(r seen) reply {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ok(r)
}

func (f *fakePBX) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

// digestGate challenges requests that lack valid digest credentials of its kind
// (401 WWW-Authenticate or 407 Proxy-Authenticate), with qop=auth.
type digestGate struct {
	code     int // 401 or 407
	realm    string
	user, pw string
	mu       sync.Mutex
	nonce    string
}

func newGate(code int, user, pw string) *digestGate {
	return &digestGate{code: code, realm: "pbx.example", user: user, pw: pw, nonce: "nonce-1"}
}

func (g *digestGate) names() (challenge, credentials string) { return authHeaders(g.code) }

// check returns nil when r carries valid credentials for the current nonce, or
// the challenge to answer with (stale when r used an earlier nonce correctly).
func (g *digestGate) check(r seen) *reply {
	g.mu.Lock()
	defer g.mu.Unlock()
	chName, credName := g.names()
	ok, nonce := verifyDigest(r.h(credName), r.Method, g.user, g.realm, g.pw)
	if ok && nonce == g.nonce {
		return nil
	}
	stale := ""
	if ok {
		stale = ", stale=true"
	}
	reason := map[int]string{401: "Unauthorized", 407: "Proxy Authentication Required"}[g.code]
	return &reply{Code: g.code, Reason: reason, Headers: map[string]string{
		chName: fmt.Sprintf(`Digest realm="%s", nonce="%s", qop="auth", algorithm=MD5%s`, g.realm, g.nonce, stale)}}
}

// rotate makes the current nonce stale.
func (g *digestGate) rotate() {
	g.mu.Lock()
	g.nonce += "x"
	g.mu.Unlock()
}

// verifyDigest checks an Authorization value (RFC 2617 with qop=auth) and
// returns the nonce it was made for.
func verifyDigest(value, method, user, realm, pw string) (bool, string) {
	v, ok := strings.CutPrefix(value, "Digest ")
	if !ok {
		return false, ""
	}
	p := map[string]string{}
	for _, part := range splitParams(v) {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		p[strings.ToLower(k)] = strings.Trim(val, `"`)
	}
	md := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	ha1, ha2 := md(user+":"+realm+":"+pw), md(method+":"+p["uri"])
	want := md(ha1 + ":" + p["nonce"] + ":" + p["nc"] + ":" + p["cnonce"] + ":" + p["qop"] + ":" + ha2)
	if p["qop"] == "" {
		want = md(ha1 + ":" + p["nonce"] + ":" + ha2)
	}
	return p["username"] == user && p["realm"] == realm && p["response"] == want, p["nonce"]
}

// splitParams splits on commas outside quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i, c := range s {
		switch c {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// stepClock is a clock a test drives: Sleep reports the duration asked for on
// slept and returns when the test calls step (after moving the time) or the
// sleeper's context ends.
type stepClock struct {
	mu    sync.Mutex
	now   time.Time
	slept chan time.Duration
	timer *stepTimer // the latest wait
}

func newStepClock() *stepClock {
	return &stepClock{now: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC), slept: make(chan time.Duration)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	t := c.NewTimer(d)
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewTimer tells the test the wait asked for, like Sleep, and returns a timer
// that step fires.
func (c *stepClock) NewTimer(d time.Duration) clock.Timer {
	t := &stepTimer{c: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timer = t // before the test hears of it: its step fires this one
	c.mu.Unlock()
	c.slept <- d
	return t
}

// NewTicker is not used by what these tests drive.
func (c *stepClock) NewTicker(time.Duration) clock.Ticker { panic("stepClock has no tickers") }

type stepTimer struct{ c chan time.Time }

func (t *stepTimer) C() <-chan time.Time { return t.c }
func (t *stepTimer) Stop() bool          { return true }

// nextSleep waits for the sleeper to ask for a sleep.
func (c *stepClock) nextSleep(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.slept:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not go to sleep")
		return 0
	}
}

// step moves the time by d and ends the current wait: the latest timer fires.
func (c *stepClock) step(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	t := c.timer
	c.mu.Unlock()
	t.c <- c.Now()
}
