package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	ntlmssp "github.com/Azure/go-ntlmssp"
)

// The CONNECT handshakes against the fake proxy of servers_test.go, which
// can be made to misbehave on cue; internal/testkit/squid's real Squid runs them in
// squid_test.go.
func TestHTTPProxyNTLM(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	tests := []struct {
		name        string
		proxy       *connectProxy
		o           Options
		wantSchemes []string // Proxy-Authorization of each CONNECT of the first tunnel
	}{
		{
			name:        "NTLM, user in the URL",
			proxy:       &connectProxy{ntlmUser: `CORP\alice`, authenticate: []string{"NTLM"}},
			o:           Options{ProxyURL: "http://CORP%5Calice:" + strings.ReplaceAll(secret, ":", "%3A") + "@"},
			wantSchemes: []string{"Basic", "NTLM", "NTLM"},
		},
		{
			name:        "Negotiate, Username and Password",
			proxy:       &connectProxy{ntlmUser: `CORP\alice`, authenticate: []string{"Negotiate"}},
			o:           Options{ProxyUser: `CORP\alice`, ProxyPassword: secret},
			wantSchemes: []string{"Basic", "Negotiate", "Negotiate"},
		},
		{
			name: "NTLM preferred over Basic",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, user: "someone", pass: "else",
				authenticate: []string{`Basic realm="corp"`, "NTLM", "Negotiate"}},
			o:           Options{ProxyUser: `CORP\alice`, ProxyPassword: secret},
			wantSchemes: []string{"Basic", "NTLM", "NTLM"},
		},
		{
			name:        "challenge in the old layout",
			proxy:       &connectProxy{ntlmUser: `CORP\alice`, oldLayout: true, authenticate: []string{"NTLM"}},
			o:           Options{ProxyUser: `CORP\alice`, ProxyPassword: secret},
			wantSchemes: []string{"Basic", "NTLM", "NTLM"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px := startConnectProxy(t, tt.proxy)
			o := tt.o
			if strings.HasSuffix(o.ProxyURL, "@") {
				o.ProxyURL += px.addr()
			} else {
				o.ProxyURL = "http://" + px.addr()
			}
			o.CAFile = caFile
			var logs bytes.Buffer
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c := newTestClient(t, o)
			if _, _, err := get(t, c, tg.URL); err != nil {
				t.Fatalf("request through the proxy: %v (%s)", err, Explain(err))
			}
			if got := px.seenSchemes(); !slices.Equal(got, tt.wantSchemes) {
				t.Errorf("Proxy-Authorization schemes %v, want %v", got, tt.wantSchemes)
			}
			if got := px.conns.Load(); got != 1 {
				t.Errorf("the handshake took %d connections, want 1", got)
			}
			// The next connection starts with the scheme the proxy took. The
			// first one goes back to the idle pool a moment after its body is
			// read: close it once it is there, or the second request would race
			// a new tunnel against it.
			for deadline := time.Now().Add(5 * time.Second); px.closed.Load() == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				c.CloseIdleConnections()
			}
			if _, _, err := get(t, c, tg.URL); err != nil {
				t.Fatalf("second tunnel: %v", err)
			}
			scheme := tt.wantSchemes[len(tt.wantSchemes)-1]
			if got := px.seenSchemes()[len(tt.wantSchemes):]; !slices.Equal(got, []string{scheme, scheme}) {
				t.Errorf("second tunnel's schemes %v, want the negotiate and authenticate messages only", got)
			}
			if px.tunnels.Load() != 2 {
				t.Errorf("tunnels = %d, want 2", px.tunnels.Load())
			}
			want := `msg="Proxy tunnel open" proxy=` + px.addr() + " auth=" + scheme + ` user=CORP\alice`
			if strings.Count(logs.String(), "Proxy tunnel open") != 1 || !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks one %q:\n%s", want, logs.String())
			}
			assertNoSecret(t, "log", logs.String())
		})
	}
}

func TestHTTPProxyBrokenHandshakes(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	tests := []struct {
		name  string
		proxy *connectProxy
		want  string
	}{
		{
			name:  "connection closed after the challenge",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, closeMidNTLM: true, authenticate: []string{"NTLM"}},
			want:  "closed the connection during the NTLM handshake for " + tg.Listener.Addr().String(),
		},
		{
			name:  "challenge with Connection: close",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, closeOn407: true, authenticate: []string{"Negotiate"}},
			want:  "broke off the Negotiate handshake",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			px := startConnectProxy(t, tt.proxy)
			c := newTestClient(t, Options{ProxyURL: "http://" + px.addr(), ProxyUser: `CORP\alice`, ProxyPassword: secret, CAFile: caFile})
			_, _, err := get(t, c, tg.URL)
			if err == nil {
				t.Fatal("request succeeded")
			}
			var pe *proxyIOError
			if !errors.As(err, &pe) {
				t.Errorf("error %v (%T), want a *proxyIOError", err, err)
			}
			if got := Explain(err); !strings.Contains(got, tt.want) {
				t.Errorf("Explain = %q, want it to contain %q", got, tt.want)
			}
			assertNoSecret(t, "error", err.Error()+Explain(err))
		})
	}

	t.Run("not an HTTP proxy", func(t *testing.T) {
		s := startSOCKS(t, &socksServer{})
		c := newTestClient(t, Options{ProxyURL: "http://" + s.addr(), CAFile: caFile})
		_, _, err := get(t, c, tg.URL)
		got := Explain(err)
		if !strings.Contains(got, "closed the connection during the CONNECT to") && !strings.Contains(got, "did not answer the CONNECT") {
			t.Errorf("Explain = %q (err %v)", got, err)
		}
		if !strings.Contains(got, "a SOCKS5 proxy needs socks5://") {
			t.Errorf("Explain = %q, want the socks5:// hint", got)
		}
	})

	t.Run("no answer in time", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close() // silent until the test ends
			}
		}()
		defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
		connectTimeout = 300 * time.Millisecond
		c := newTestClient(t, Options{ProxyURL: "http://" + ln.Addr().String()})
		_, _, err = get(t, c, tg.URL)
		if got := Explain(err); !strings.Contains(got, "did not answer the CONNECT to "+tg.Listener.Addr().String()+" in time") {
			t.Errorf("Explain = %q (err %v)", got, err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		// A proxy that never answers; the caller gives up: the handshake ends
		// with the context's error, not the 30 s handshake limit's.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		c := newTestClient(t, Options{ProxyURL: "http://" + ln.Addr().String()})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err = c.Transport.(*http.Transport).DialContext(ctx, "tcp", tg.Listener.Addr().String())
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestProxyCredentialOptions(t *testing.T) {
	clearProxyEnv(t)
	tests := []struct {
		o    Options
		want string
	}{
		{Options{ProxyURL: "http://bob:" + secret + "@proxy.corp:3128", ProxyUser: "alice", ProxyPassword: secret},
			`[Proxy] URL holds the user "bob" and [Proxy] Username is set too`},
		{Options{ProxyURL: "", ProxyUser: "alice", ProxyPassword: secret},
			"[Proxy] Username and Password are set, but [Proxy] URL is empty"},
		{Options{ProxyURL: "direct", ProxyUser: "alice"},
			"[Proxy] URL says direct (no proxy)"},
		{Options{ProxyURL: "http://proxy.corp:3128", ProxyPassword: secret},
			`[Proxy] Password is set but [Proxy] Username is empty; put the user name in [Proxy] Username (DOMAIN\user for NTLM)`},
	}
	for _, tt := range tests {
		_, err := NewClient(tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewClient(%q, user %q): err = %v, want %q", redactRaw(tt.o.ProxyURL), tt.o.ProxyUser, err, tt.want)
			continue
		}
		assertNoSecret(t, "error", err.Error())
	}
}

func TestParseChallenges(t *testing.T) {
	cs := parseChallenges([]string{`NTLM`, `Basic realm="a, b", charset="UTF-8"`, `Negotiate TlRMTVNTUAACAAAA, Digest realm="x", nonce="y"`})
	if got := cs.schemes(); !slices.Equal(got, []string{"NTLM", "Basic", "Negotiate", "Digest"}) {
		t.Errorf("schemes %v", got)
	}
	if tok, err := cs.token("Negotiate"); err != nil || !bytes.HasPrefix(tok, []byte("NTLMSSP\x00\x02")) {
		t.Errorf("Negotiate token % x, %v", tok, err)
	}
	if tok, _ := cs.token("NTLM"); tok != nil {
		t.Errorf("bare NTLM has token % x", tok)
	}
	if tok, _ := cs.token("Basic"); tok != nil {
		t.Errorf("Basic's realm taken as a token: % x", tok)
	}
	if !cs.offers("basic") || cs.offers("Bearer") {
		t.Error("offers is wrong")
	}
}

func TestChoose(t *testing.T) {
	all := parseChallenges([]string{"Basic realm=x", "NTLM", "Negotiate"})
	basic := parseChallenges([]string{"Basic realm=x"})
	tests := []struct {
		offers                 challenges
		creds, refused         bool
		want, wantIfIntegrated string
	}{
		{all, true, false, schemeNTLM, schemeNTLM},
		{parseChallenges([]string{"Basic realm=x", "Negotiate"}), true, false, schemeNegotiate, schemeNegotiate},
		{basic, true, false, schemeBasic, schemeBasic},
		{basic, true, true, "", ""},
		{all, false, false, "", schemeNegotiate},
		{basic, false, false, "", ""},
	}
	for _, tt := range tests {
		want := tt.want
		if integratedAuth {
			want = tt.wantIfIntegrated
		}
		if got := choose(tt.offers, tt.creds, tt.refused); got != want {
			t.Errorf("choose(%v, creds %v, basic refused %v) = %q, want %q", tt.offers.schemes(), tt.creds, tt.refused, got, want)
		}
	}
}

// The full layout passes unchanged in meaning; the old one and a bogus
// TargetName give a message go-ntlmssp answers.
func TestNormalizeChallenge(t *testing.T) {
	for _, old := range []bool{false, true} {
		msg := testChallenge(old)
		if _, err := ntlmssp.NewAuthenticateMessage(msg, `CORP\alice`, secret, nil); (err == nil) == old {
			t.Errorf("old layout %v: go-ntlmssp on the raw message: %v", old, err)
		}
		norm, err := normalizeChallenge(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(norm[24:32], msg[24:32]) || !bytes.Equal(norm[20:24], msg[20:24]) {
			t.Errorf("old layout %v: flags or server challenge changed", old)
		}
		info := func(m []byte) []byte {
			n, off := binary.LittleEndian.Uint16(m[40:]), binary.LittleEndian.Uint32(m[44:])
			return m[off : off+uint32(n)]
		}
		if !old && !bytes.Equal(info(norm), info(msg)) {
			t.Error("target info lost")
		}
		auth, err := ntlmssp.NewAuthenticateMessage(norm, `CORP\alice`, secret, nil)
		if err != nil {
			t.Fatalf("old layout %v: %v", old, err)
		}
		if got := ntlmUserOf(auth); got != `CORP\alice` {
			t.Errorf("AUTHENTICATE names %q", got)
		}
	}
	for _, bad := range [][]byte{nil, []byte("NTLMSSP\x00\x01\x00\x00\x00"), bytes.Repeat([]byte{0}, 64)} {
		if _, err := normalizeChallenge(bad); err == nil {
			t.Errorf("normalizeChallenge(% x) accepted it", bad)
		}
	}
}

// 407s of net/http's CONNECT for HTTPS_PROXY (Go never proxies a loopback
// target from the environment, so these are built by hand; the Squid test
// runs the real thing for Basic).
func TestExplainEnvironmentProxy407(t *testing.T) {
	for _, tc := range []struct {
		e    connectError
		want string
	}{
		{connectError{proxy: "proxy.corp:3128", target: "graph.microsoft.com:443", status: 407, schemes: []string{"NTLM", "Negotiate"}, setting: settingEnv},
			"the HTTP proxy proxy.corp:3128 from the HTTPS_PROXY environment variable asks for NTLM or Negotiate authentication (407 Proxy Authentication Required), " +
				"which presencebridge answers only for a proxy in [Proxy] URL; set [Proxy] URL = http://proxy.corp:3128 and put a domain account in [Proxy] Username"},
		{connectError{proxy: "proxy.corp:3128", status: 407, schemes: []string{"Basic"}, setting: settingEnv, sentCredentials: true, user: "alice", scheme: schemeBasic, credSetting: settingEnv},
			`refused the Basic credentials of user "alice" (407 Proxy Authentication Required); check the user and password in the HTTPS_PROXY environment variable`},
		{connectError{proxy: "proxy.corp:3128", status: 407, schemes: []string{"Basic"}, setting: settingEnv},
			"asks for Basic authentication (407 Proxy Authentication Required); put the user and password in the HTTPS_PROXY environment variable as http://user:password@host:port"},
	} {
		if got := explainConnect(&tc.e); !strings.Contains(got, tc.want) {
			t.Errorf("explainConnect = %q, want it to contain %q", got, tc.want)
		}
	}
}
