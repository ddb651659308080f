package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/squid"
)

// The password of the Basic tests holds everything a proxy URL makes hard: a
// space, @, :, %, and a non-ASCII letter.
const (
	squidUser = "proxyuser"
	squidPass = "pr0xy p@ss:%é"
	// squidPassEncoded is squidPass percent-encoded for a URL's userinfo.
	squidPassEncoded = "pr0xy%20p%40ss%3A%25%C3%A9"
)

func startSquid(t *testing.T, o squid.Options) *squid.Server {
	t.Helper()
	squid.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := squid.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("squid log:\n%s", s.LogTail(30))
		}
		s.Stop()
	})
	return s
}

// tunnels waits until Squid has logged n tunnels (it logs a CONNECT when the
// tunnel closes, so the client's idle connections are closed first) and
// returns the log.
func tunnels(t *testing.T, s *squid.Server, c *http.Client, n int) []squid.Request {
	t.Helper()
	c.CloseIdleConnections()
	rs, err := s.WaitRequests(10*time.Second, func(rs []squid.Request) bool {
		ok := 0
		for _, r := range rs {
			if r.Method == http.MethodConnect && r.Status == http.StatusOK {
				ok++
			}
		}
		return ok >= n
	})
	if err != nil {
		t.Fatalf("%v; the log holds %+v", err, rs)
	}
	return rs
}

// lastTunnel is the last CONNECT Squid answered 200.
func lastTunnel(rs []squid.Request) squid.Request {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Method == http.MethodConnect && rs[i].Status == http.StatusOK {
			return rs[i]
		}
	}
	return squid.Request{}
}

func TestIntegrationSquidNoAuth(t *testing.T) {
	ca := newTestCA(t)
	tg := newTarget(t, loopbackCert(t, ca))
	s := startSquid(t, squid.Options{})
	c := newTestClient(t, Options{ProxyURL: s.URL, CAFile: writeTemp(t, "ca.pem", ca.CertPEM)})
	for range 2 {
		body, proto, err := get(t, c, tg.URL+"/v1.0/me")
		if err != nil {
			t.Fatalf("through Squid: %v (%s)", err, Explain(err))
		}
		if body != "hello over HTTP/2.0" || proto != "HTTP/2.0" {
			t.Errorf("body %q proto %s, want HTTP/2 through the tunnel", body, proto)
		}
	}
	rs := tunnels(t, s, c, 1)
	if r := lastTunnel(rs); r.URL != tg.Listener.Addr().String() || r.User != "" || r.Scheme != "" {
		t.Errorf("Squid logged %+v", r)
	}
	if len(rs) != 1 {
		t.Errorf("Squid logged %d requests for two GETs on a kept-alive tunnel, want 1: %+v", len(rs), rs)
	}
	if tg.hits.Load() != 2 {
		t.Errorf("target saw %d requests, want 2", tg.hits.Load())
	}
}

func TestIntegrationSquidBasic(t *testing.T) {
	clearProxyEnv(t)
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	s := startSquid(t, squid.Options{Basic: map[string]string{squidUser: squidPass}})
	hostport := strings.TrimPrefix(s.URL, "http://")

	ok := []struct {
		name string
		o    Options
	}{
		{"percent-encoded in the URL", Options{ProxyURL: "http://" + squidUser + ":" + squidPassEncoded + "@" + hostport}},
		{"Username and Password", Options{ProxyURL: s.URL, ProxyUser: squidUser, ProxyPassword: squidPass}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.CAFile = caFile
			c := newTestClient(t, tt.o)
			before, _ := s.Requests()
			if _, _, err := get(t, c, tg.URL); err != nil {
				t.Fatalf("through Squid: %v (%s)", err, Explain(err))
			}
			rs := tunnels(t, s, c, countOK(before)+1)
			if r := lastTunnel(rs); r.User != squidUser || r.Scheme != schemeBasic {
				t.Errorf("Squid logged %+v, want user %s with Basic", r, squidUser)
			}
		})
	}

	refused := []struct {
		name string
		o    Options
		want []string
	}{
		{"wrong password", Options{ProxyURL: s.URL, ProxyUser: squidUser, ProxyPassword: "pr0xy p@ss:%e"},
			[]string{`refused the Basic credentials of user "proxyuser" (407 Proxy Authentication Required); check [Proxy] Username and Password`}},
		{"password not percent-decoded", Options{ProxyURL: "http://" + squidUser + ":" + url.PathEscape(squidPassEncoded) + "@" + hostport},
			[]string{`refused the Basic credentials of user "proxyuser"`, "write a % in them as %25"}},
		// A domain account meant for NTLM, against a proxy that asks for Basic: sent as Basic.
		{"domain account, Basic proxy", Options{ProxyURL: s.URL, ProxyUser: `CORP\alice`, ProxyPassword: squidPass},
			[]string{`refused the Basic credentials of user "CORP\\alice"`}},
		{"no credentials", Options{ProxyURL: s.URL},
			[]string{"asks for Basic authentication (407 Proxy Authentication Required); put the user and password in [Proxy] URL as http://user:password@host:port, or in [Proxy] Username and Password"}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.CAFile = caFile
			c := newTestClient(t, tt.o)
			_, _, err := get(t, c, tg.URL)
			var ce *connectError
			if !errors.As(err, &ce) || ce.status != http.StatusProxyAuthRequired {
				t.Fatalf("err = %v, want Squid's 407", err)
			}
			got := Explain(err)
			for _, w := range append(tt.want, hostport) {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, want it to contain %q", got, w)
				}
			}
			assertNoSquidPass(t, err.Error()+"\n"+got)
		})
	}

	t.Run("HTTPS_PROXY from the environment", func(t *testing.T) {
		// net/http's own CONNECT with Basic. It never proxies a loopback
		// target, so the target has a name only Squid resolves.
		clearProxyEnv(t)
		named := newTarget(t, testkit.Issue(t, ca, pki.Options{DNSNames: []string{"graph.pb-test.example"}}).TLS())
		s := startSquid(t, squid.Options{Basic: map[string]string{squidUser: squidPass}, Hosts: map[string]string{"graph.pb-test.example": "127.0.0.1"}})
		t.Setenv("HTTPS_PROXY", "http://"+squidUser+":"+squidPassEncoded+"@"+strings.TrimPrefix(s.URL, "http://"))
		c := newTestClient(t, Options{CAFile: caFile})
		if _, _, err := get(t, c, "https://graph.pb-test.example:"+named.port()+"/v1.0/"); err != nil {
			t.Fatalf("through Squid from HTTPS_PROXY: %v (%s)", err, Explain(err))
		}
		if r := lastTunnel(tunnels(t, s, c, 1)); r.User != squidUser || r.URL != "graph.pb-test.example:"+named.port() {
			t.Errorf("Squid logged %+v", r)
		}
	})
}

func countOK(rs []squid.Request) int {
	n := 0
	for _, r := range rs {
		if r.Method == http.MethodConnect && r.Status == http.StatusOK {
			n++
		}
	}
	return n
}

func assertNoSquidPass(t *testing.T, s string) {
	t.Helper()
	for _, v := range []string{squidPass, squidPassEncoded, "pr0xy"} {
		if strings.Contains(s, v) {
			t.Errorf("output shows the password: %q", strings.ReplaceAll(s, v, "<PASSWORD>"))
		}
	}
}

// ntlm_fake_auth takes any user once the handshake is complete: what is
// tested is the three-message handshake on one connection, and which user
// Squid saw.
func TestIntegrationSquidNTLM(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	cases := []struct {
		name     string
		proxy    squid.Options
		o        Options
		wantUser string
		scheme   string
	}{
		{"NTLM", squid.Options{NTLM: true}, Options{ProxyUser: `CORP\alice`, ProxyPassword: squidPass}, `CORP\alice`, schemeNTLM},
		{"Negotiate carrying NTLM", squid.Options{Negotiate: true}, Options{ProxyUser: `CORP\alice`, ProxyPassword: squidPass}, `CORP\alice`, schemeNegotiate},
		// Basic-style credentials in the URL, against a proxy that asks for NTLM: answered with NTLM.
		{"user from the URL", squid.Options{NTLM: true}, Options{ProxyURL: "http://" + squidUser + ":" + squidPassEncoded + "@"}, squidUser, schemeNTLM},
		// Both offered, and Basic would refuse this user: NTLM is taken.
		{"NTLM and Basic offered", squid.Options{NTLM: true, Basic: map[string]string{squidUser: squidPass}},
			Options{ProxyUser: `CORP\alice`, ProxyPassword: squidPass}, `CORP\alice`, schemeNTLM},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			s := startSquid(t, tt.proxy)
			o := tt.o
			if strings.HasSuffix(o.ProxyURL, "@") {
				o.ProxyURL += strings.TrimPrefix(s.URL, "http://")
			} else {
				o.ProxyURL = s.URL
			}
			o.CAFile = caFile
			c := newTestClient(t, o)
			for i := range 2 {
				if _, _, err := get(t, c, tg.URL); err != nil {
					t.Fatalf("request %d through Squid: %v (%s)", i, err, Explain(err))
				}
				c.CloseIdleConnections() // a new tunnel, a new handshake
			}
			rs := tunnels(t, s, c, 2)
			if got := squid.Users(rs, http.StatusOK); !slices.Equal(got, []string{tt.wantUser}) {
				t.Errorf("Squid's users with 200: %v, want [%s]", got, tt.wantUser)
			}
			if r := lastTunnel(rs); r.Scheme != tt.scheme {
				t.Errorf("Squid logged %+v, want %s", r, tt.scheme)
			}
			assertNoSquidPass(t, strings.Join(squid.Users(rs, http.StatusProxyAuthRequired), " "))
		})
	}

	t.Run("no credentials", func(t *testing.T) {
		s := startSquid(t, squid.Options{NTLM: true})
		c := newTestClient(t, Options{ProxyURL: s.URL, CAFile: caFile})
		_, _, err := get(t, c, tg.URL)
		want := `asks for NTLM authentication (407 Proxy Authentication Required): put a domain account in [Proxy] Username as DOMAIN\user and its password in [Proxy] Password`
		if integratedAuth {
			want = "asks for NTLM, and Windows could not answer it as the service account"
		}
		if got := Explain(err); !strings.Contains(got, want) {
			t.Errorf("Explain = %q, want it to contain %q", got, want)
		}
	})
}

// TLS inspection: Squid decrypts the tunnel with certificates of its own CA.
// The target is named localhost: for an IP address Squid 5 mints a
// certificate that names it as a DNS name (see TestCertificateProblems).
func TestIntegrationSquidTLSInspection(t *testing.T) {
	ca := newTestCA(t)
	tg := newTarget(t, loopbackCert(t, ca))
	s := startSquid(t, squid.Options{Bump: true, UpstreamCAFile: writeTemp(t, "target-ca.pem", ca.CertPEM)})

	t.Run("CAFile set to the proxy's CA", func(t *testing.T) {
		var seenIssuer string
		c := newTestClient(t, Options{ProxyURL: s.URL, CAFile: s.CAFile})
		tr := c.Transport.(*http.Transport)
		tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			seenIssuer = cs.PeerCertificates[0].Issuer.CommonName
			return nil
		}
		body, _, err := get(t, c, "https://localhost:"+tg.port()+"/v1.0/organization")
		if err != nil {
			t.Fatalf("through the inspecting Squid: %v (%s)", err, Explain(err))
		}
		if !strings.HasPrefix(body, "hello over HTTP/1.1") {
			t.Errorf("body %q (Squid speaks HTTP/1.1 to both sides when it inspects)", body)
		}
		if seenIssuer != "presencebridge test inspection CA" {
			t.Errorf("certificate issued by %q, want Squid's inspection CA", seenIssuer)
		}
		c.CloseIdleConnections()
		if rs, err := s.WaitRequests(10*time.Second, func(rs []squid.Request) bool {
			return slices.ContainsFunc(rs, func(r squid.Request) bool {
				return r.Method == http.MethodGet && r.Status == http.StatusOK && strings.HasSuffix(r.URL, "/v1.0/organization")
			})
		}); err != nil {
			t.Errorf("Squid did not log the GET inside the tunnel: %v; the log holds %+v", err, rs)
		}
	})

	t.Run("CAFile not set", func(t *testing.T) {
		c := newTestClient(t, Options{ProxyURL: s.URL})
		_, _, err := get(t, c, "https://localhost:"+tg.port()+"/")
		got := Explain(err)
		for _, w := range []string{"signed by an unknown authority", `issuer "CN=presencebridge test inspection CA`, "set [Proxy] CAFile to its CA certificate (PEM)"} {
			if !strings.Contains(got, w) {
				t.Errorf("Explain = %q, want it to contain %q", got, w)
			}
		}
	})
}
