package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// secret is the proxy password of every test; it must never surface.
const secret = "s3cret-P@ss:w0rd"

func proxyURL(scheme, user, pass, addr string) string {
	u := &url.URL{Scheme: scheme, Host: addr}
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

func newTestClient(t *testing.T, o Options) *http.Client {
	t.Helper()
	c, err := NewClient(o)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get fetches u and returns the body and protocol; the context is only a
// safety net against a hung test.
func get(t *testing.T, c *http.Client, u string) (body, proto string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.Proto, err
}

func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret), "s3cret"} {
		if strings.Contains(s, v) {
			t.Errorf("%s shows the password: %q", what, strings.ReplaceAll(s, v, "<PASSWORD>"))
		}
	}
}

// show prints a proxy URL for test output, without its password.
func show(u *url.URL) string {
	if u == nil {
		return "none"
	}
	return u.Redacted()
}

func clearProxyEnv(t *testing.T) {
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(k, "")
	}
}

func TestNewClientIsTunedTransport(t *testing.T) {
	c := newTestClient(t, Options{ProxyURL: "direct"})
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T, want *http.Transport", c.Transport)
	}
	if c.Timeout != DefaultTimeout {
		t.Errorf("Timeout = %s, want %s", c.Timeout, DefaultTimeout)
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.TLSClientConfig.InsecureSkipVerify {
		t.Errorf("TLS config = %+v, want MinVersion TLS 1.2 and verification on", tr.TLSClientConfig)
	}
	if tr.MaxIdleConnsPerHost != 16 || !tr.ForceAttemptHTTP2 || tr.TLSHandshakeTimeout <= 0 || tr.IdleConnTimeout <= 0 {
		t.Errorf("pool/HTTP2 settings: MaxIdleConnsPerHost=%d ForceAttemptHTTP2=%v TLSHandshakeTimeout=%s IdleConnTimeout=%s",
			tr.MaxIdleConnsPerHost, tr.ForceAttemptHTTP2, tr.TLSHandshakeTimeout, tr.IdleConnTimeout)
	}
	if tr.ResponseHeaderTimeout < c.Timeout {
		t.Errorf("ResponseHeaderTimeout %s is shorter than the request cap %s", tr.ResponseHeaderTimeout, c.Timeout)
	}

	c2 := newTestClient(t, Options{ProxyURL: "direct", Timeout: 3 * time.Minute})
	if tr2 := c2.Transport.(*http.Transport); c2.Timeout != 3*time.Minute || tr2.ResponseHeaderTimeout < 3*time.Minute {
		t.Errorf("Timeout 3m: client %s, ResponseHeaderTimeout %s", c2.Timeout, tr2.ResponseHeaderTimeout)
	}
	if _, err := NewClient(Options{Timeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative Timeout: err = %v, want an error saying negative", err)
	}
}

func TestHTTPProxyCarriesTraffic(t *testing.T) {
	ca := newTestCA(t)
	tg := newTarget(t, loopbackCert(t, ca))
	px := startConnectProxy(t, &connectProxy{user: "alice", pass: secret})
	var logs bytes.Buffer
	c := newTestClient(t, Options{
		ProxyURL: proxyURL("http", "alice", secret, px.addr()),
		CAFile:   writeTemp(t, "ca.pem", ca.CertPEM),
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})

	for i := range 3 {
		body, proto, err := get(t, c, tg.URL+"/v1.0/me")
		if err != nil {
			t.Fatalf("request %d through the proxy: %v", i, err)
		}
		if body != "hello over HTTP/2.0" || proto != "HTTP/2.0" {
			t.Errorf("request %d: body %q proto %s, want HTTP/2 through the tunnel", i, body, proto)
		}
	}
	if got := px.tunnels.Load(); got != 1 {
		t.Errorf("proxy opened %d tunnels for 3 requests, want 1 (kept alive)", got)
	}
	if got, want := px.seenTargets(), []string{tg.Listener.Addr().String()}; !slices.Equal(got, want) {
		t.Errorf("proxy CONNECT targets = %v, want %v", got, want)
	}
	if got := tg.hits.Load(); got != 3 {
		t.Errorf("target saw %d requests, want 3", got)
	}
	assertNoSecret(t, "log", logs.String())
	if !strings.Contains(logs.String(), "via HTTP proxy "+px.addr()+" (user alice from [Proxy] URL, for Negotiate, NTLM or Basic as the proxy asks)") {
		t.Errorf("log does not describe the route: %s", logs.String())
	}
	if !strings.Contains(logs.String(), `msg="Proxy tunnel open" proxy=`+px.addr()+" auth=Basic user=alice") {
		t.Errorf("log does not say which authentication the proxy took: %s", logs.String())
	}
	if got := px.seenSchemes(); !slices.Equal(got, []string{"Basic"}) {
		t.Errorf("Proxy-Authorization schemes %v, want [Basic] (pre-emptive)", got)
	}
}

func TestHTTPProxyRefusals(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	tests := []struct {
		name       string
		proxy      *connectProxy
		user, pass string
		want       []string
	}{
		{
			name:  "wrong password",
			proxy: &connectProxy{user: "alice", pass: "right"},
			user:  "alice", pass: secret,
			want: []string{"refused the Basic credentials of user \"alice\" (407 Proxy Authentication Required)",
				"check the user and password in [Proxy] URL (they are percent-decoded once: write a % in them as %25)"},
		},
		{
			name:  "wrong password, proxy closes after 407",
			proxy: &connectProxy{user: "alice", pass: "right", closeOn407: true},
			user:  "alice", pass: secret,
			want: []string{"refused the Basic credentials of user \"alice\""},
		},
		{
			name:  "no credentials",
			proxy: &connectProxy{user: "alice", pass: "right"},
			want: []string{"asks for Basic authentication (407 Proxy Authentication Required)",
				"put the user and password in [Proxy] URL as http://user:password@host:port, or in [Proxy] Username and Password"},
		},
		{
			name:  "no scheme offered",
			proxy: &connectProxy{user: "alice", pass: "right", authenticate: []string{}},
			want:  []string{"requires authentication (407 Proxy Authentication Required); put the user and password in [Proxy] URL"},
		},
		{
			name:  "NTLM, no credentials",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, authenticate: []string{"NTLM", "Negotiate"}},
			want: []string{"asks for NTLM or Negotiate authentication (407 Proxy Authentication Required): " +
				`put a domain account in [Proxy] Username as DOMAIN\user and its password in [Proxy] Password`},
		},
		{
			name:  "NTLM refuses the user after a full handshake",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, authenticate: []string{"NTLM"}},
			user:  `CORP\bob`, pass: secret,
			want: []string{`refused the credentials of user "CORP\\bob" after a full NTLM handshake (407 Proxy Authentication Required)`,
				"check the user and password in [Proxy] URL", "not locked"},
		},
		{
			name:  "Negotiate refuses the user after a full handshake",
			proxy: &connectProxy{ntlmUser: `CORP\alice`, authenticate: []string{"Negotiate"}},
			user:  `CORP\bob`, pass: secret,
			want: []string{"after a full Negotiate handshake", "a proxy that takes only Kerberos refuses it"},
		},
		{
			name:  "Digest only",
			proxy: &connectProxy{user: "alice", pass: "right", authenticate: []string{`Digest realm="corp", nonce="abc"`}},
			user:  "alice", pass: secret,
			want: []string{"asks for Digest authentication (407 Proxy Authentication Required), which presencebridge does not speak",
				"exempt " + tg.Listener.Addr().String()},
		},
		{
			name:  "forbidden",
			proxy: &connectProxy{status: http.StatusForbidden},
			want:  []string{"refused to open a tunnel to " + tg.Listener.Addr().String(), "403 Forbidden"},
		},
		{
			name:  "bad gateway",
			proxy: &connectProxy{status: http.StatusBadGateway},
			want:  []string{"could not reach " + tg.Listener.Addr().String(), "502 Bad Gateway"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if integratedAuth && tt.proxy.ntlmUser != "" && tt.user == "" {
				t.Skip("on Windows the service account answers NTLM when no credentials are configured")
			}
			px := startConnectProxy(t, tt.proxy)
			c := newTestClient(t, Options{ProxyURL: proxyURL("http", tt.user, tt.pass, px.addr()), CAFile: caFile})
			before := tg.hits.Load()
			_, _, err := get(t, c, tg.URL)
			if err == nil {
				t.Fatal("request succeeded, want a proxy refusal")
			}
			var ce *connectError
			if !errors.As(err, &ce) || ce.proxy != px.addr() {
				t.Errorf("error %v (%T) does not carry the CONNECT reply of %s", err, err, px.addr())
			}
			got := Explain(err)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, want it to contain %q", got, w)
				}
			}
			if !strings.Contains(got, px.addr()) {
				t.Errorf("Explain = %q does not name the proxy %s", got, px.addr())
			}
			assertNoSecret(t, "error", err.Error())
			assertNoSecret(t, "Explain", got)
			if tg.hits.Load() != before {
				t.Error("the target was reached although the proxy refused")
			}
		})
	}
}

func TestSOCKS5CarriesTraffic(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	tests := []struct {
		name       string
		server     *socksServer
		scheme     string
		user, pass string
		wantReq    socksRequest // what the SOCKS server must have been asked
	}{
		{
			name:    "no auth, proxy resolves the name",
			server:  &socksServer{},
			scheme:  "socks5h",
			wantReq: socksRequest{atyp: 3, addr: "localhost:" + tg.port()},
		},
		{
			name:    "user/password, name resolved here",
			server:  &socksServer{user: "bob", pass: secret},
			scheme:  "socks5",
			user:    "bob",
			pass:    secret,
			wantReq: socksRequest{atyp: 1, addr: "127.0.0.1:" + tg.port(), user: "bob"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSOCKS(t, tt.server)
			c := newTestClient(t, Options{ProxyURL: proxyURL(tt.scheme, tt.user, tt.pass, s.addr()), CAFile: caFile})
			before := tg.hits.Load()
			body, _, err := get(t, c, "https://localhost:"+tg.port()+"/presence")
			if err != nil {
				t.Fatalf("request through SOCKS5: %v", err)
			}
			if !strings.HasPrefix(body, "hello") {
				t.Errorf("body %q", body)
			}
			if got := s.tunnels.Load(); got != 1 {
				t.Errorf("SOCKS server opened %d tunnels, want 1", got)
			}
			if got := s.requests(); len(got) != 1 || got[0] != tt.wantReq {
				t.Errorf("SOCKS requests = %+v, want [%+v]", got, tt.wantReq)
			}
			if got := tg.hits.Load() - before; got != 1 {
				t.Errorf("target saw %d requests, want 1", got)
			}
		})
	}
}

func TestSOCKS5Failures(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))
	dead := closedPort(t)
	tests := []struct {
		name       string
		server     *socksServer
		user, pass string
		url        string
		want       []string
	}{
		{
			name:   "bad credentials",
			server: &socksServer{user: "bob", pass: "right"},
			user:   "bob", pass: secret,
			url:  tg.URL,
			want: []string{"SOCKS5: the proxy ", `refused the credentials of user "bob"`, "check user/password in [Proxy] URL"},
		},
		{
			name:   "credentials missing",
			server: &socksServer{user: "bob", pass: "right"},
			url:    tg.URL,
			want:   []string{"SOCKS5: the proxy ", "requires authentication", "socks5://user:password@host:port"},
		},
		{
			name:   "target refused behind the proxy",
			server: &socksServer{},
			url:    "https://" + dead,
			want:   []string{"could not connect to the target " + dead, "(connection refused)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSOCKS(t, tt.server)
			c := newTestClient(t, Options{ProxyURL: proxyURL("socks5h", tt.user, tt.pass, s.addr()), CAFile: caFile})
			before := tg.hits.Load()
			_, _, err := get(t, c, tt.url)
			if err == nil {
				t.Fatal("request succeeded, want a SOCKS5 failure")
			}
			got := Explain(err)
			for _, w := range append(tt.want, s.addr()) {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, want it to contain %q", got, w)
				}
			}
			assertNoSecret(t, "error", err.Error())
			assertNoSecret(t, "Explain", got)
			if s.tunnels.Load() != 0 || tg.hits.Load() != before {
				t.Error("traffic passed although the SOCKS5 step failed")
			}
		})
	}
}

func TestPrivateCA(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tg := newTarget(t, loopbackCert(t, ca))

	t.Run("trusted with CAFile", func(t *testing.T) {
		c := newTestClient(t, Options{ProxyURL: "direct", CAFile: caFile})
		if _, _, err := get(t, c, tg.URL); err != nil {
			t.Fatalf("with CAFile: %v", err)
		}
	})

	wantTLS := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("request succeeded without the CA, want an unknown authority error")
		}
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) {
			t.Fatalf("error %v, want x509.UnknownAuthorityError in the chain", err)
		}
		got := Explain(err)
		for _, w := range []string{
			"TLS: the certificate of " + tg.Listener.Addr().String() + " is signed by an unknown authority",
			`issuer "CN=Test Inspection CA,O=presencebridge tests"`,
			"set [Proxy] CAFile to its CA certificate (PEM)",
		} {
			if !strings.Contains(got, w) {
				t.Errorf("Explain = %q, want it to contain %q", got, w)
			}
		}
	}
	t.Run("untrusted direct", func(t *testing.T) {
		c := newTestClient(t, Options{ProxyURL: "direct"})
		_, _, err := get(t, c, tg.URL)
		wantTLS(t, err)
	})
	t.Run("untrusted through the proxy", func(t *testing.T) {
		// The tunnel works; the failure is TLS with the target, not the proxy.
		px := startConnectProxy(t, &connectProxy{})
		c := newTestClient(t, Options{ProxyURL: proxyURL("http", "", "", px.addr())})
		_, _, err := get(t, c, tg.URL)
		wantTLS(t, err)
		if px.tunnels.Load() != 1 {
			t.Errorf("proxy tunnels = %d, want 1", px.tunnels.Load())
		}
	})
}

func TestCertificateProblems(t *testing.T) {
	ca := newTestCA(t)
	caFile := writeTemp(t, "ca.pem", ca.CertPEM)
	tests := []struct {
		name string
		leaf pki.Options
		want []string
	}{
		{
			name: "hostname mismatch",
			leaf: pki.Options{DNSNames: []string{"graph.contoso.example"}},
			want: []string{"TLS: the certificate presented for 127.0.0.1:", "is not valid for 127.0.0.1", "(it covers graph.contoso.example)"},
		},
		{
			name: "IP address as a DNS name",
			leaf: pki.Options{DNSNames: []string{"127.0.0.1"}},
			want: []string{"(it covers 127.0.0.1 (as a DNS name, which does not cover an IP address))"},
		},
		{
			name: "expired",
			leaf: pki.Options{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
				NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)},
			want: []string{"TLS: the certificate of 127.0.0.1:", "has expired or is not yet valid", "is after", "check this machine's clock"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := newTarget(t, testkit.Issue(t, ca, tt.leaf).TLS())
			c := newTestClient(t, Options{ProxyURL: "direct", CAFile: caFile})
			_, _, err := get(t, c, tg.URL)
			if err == nil {
				t.Fatal("request succeeded, want a certificate error")
			}
			got := Explain(err)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, want it to contain %q", got, w)
				}
			}
		})
	}
}

func TestCAFileErrors(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.pem")
	garbage := writeTemp(t, "garbage.pem", []byte("this is not a certificate\n"))
	keyOnly := writeTemp(t, "key.pem", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	broken := writeTemp(t, "broken.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	tests := []struct {
		file string
		want string // exact prefix of the error
		also string
	}{
		{missing, "read CA file " + missing + ": no such file or directory", ""},
		{garbage, "CA file " + garbage + " holds no PEM certificates", "openssl x509 -inform der"},
		{keyOnly, "CA file " + keyOnly + " holds no PEM certificates", "found only PRIVATE KEY blocks"},
		{broken, "CA file " + broken + ": certificate 1 cannot be parsed", ""},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			_, err := NewClient(Options{ProxyURL: "direct", CAFile: tt.file})
			if err == nil {
				t.Fatal("NewClient accepted the CA file")
			}
			if !strings.HasPrefix(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.also) {
				t.Errorf("err = %q, want prefix %q containing %q", err, tt.want, tt.also)
			}
		})
	}
	if _, err := NewClient(Options{ProxyURL: "direct", CAFile: missing}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file error %v does not match fs.ErrNotExist", err)
	}
	// A bundle with text around the certificates, as exported by browsers, loads.
	mixed := writeTemp(t, "mixed.pem", append([]byte("Corp Inspection CA\n"), ca.CertPEM...))
	if _, err := NewClient(Options{ProxyURL: "direct", CAFile: mixed}); err != nil {
		t.Errorf("bundle with a header line: %v", err)
	}
}

func TestBadProxyURL(t *testing.T) {
	tests := []struct {
		raw  string
		want string
	}{
		{"proxy.corp:3128", `the scheme is missing (did you mean "http://proxy.corp:3128"?)`},
		{"ftp://alice:" + url.QueryEscape(secret) + "@proxy.corp:21", `scheme "ftp" is not supported`},
		{"https://proxy.corp:443", `scheme "https" is not supported`},
		{"http://alice:" + url.QueryEscape(secret) + "@proxy.corp", "the port is missing"},
		{"http://:3128", "the host is missing"},
		{"socks5://:" + url.QueryEscape(secret) + "@socks.corp:1080", "the user name before the password is empty"},
		{"http://alice:" + secret + "@proxy corp:3128", "does not parse as a URL"}, // unencoded, with a space
		{"http://alice:s3cret#x:1@proxy.corp:3128", "are special characters in the password percent-encoded?"},
		{"http://proxy corp:3128", `invalid character " " in host name`},
		{"http://proxy.corp:3128/path", "no path or query"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := NewClient(Options{ProxyURL: tt.raw})
			if err == nil {
				t.Fatalf("NewClient(%q) accepted it", redactRaw(tt.raw))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, "allowed: http://[user:password@]host:port, socks5://") {
				t.Errorf("err = %q, want %q and the allowed forms", msg, tt.want)
			}
			assertNoSecret(t, "error", msg)
			if d := Describe(Options{ProxyURL: tt.raw}); !strings.HasPrefix(d, "invalid proxy setting: ") {
				t.Errorf("Describe = %q", d)
			} else {
				assertNoSecret(t, "Describe", d)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	clearProxyEnv(t)
	tests := []struct {
		o    Options
		want string
	}{
		{Options{ProxyURL: proxyURL("http", "alice", secret, "proxy.corp:3128")},
			"via HTTP proxy proxy.corp:3128 (user alice from [Proxy] URL, for Negotiate, NTLM or Basic as the proxy asks)"},
		{Options{ProxyURL: "http://proxy.corp:3128", ProxyUser: `CORP\alice`, ProxyPassword: secret},
			`via HTTP proxy proxy.corp:3128 (user CORP\alice from [Proxy] Username and Password, for Negotiate, NTLM or Basic as the proxy asks)`},
		{Options{ProxyURL: "http://proxy.corp:3128"}, "via HTTP proxy proxy.corp:3128 (no auth)"},
		{Options{ProxyURL: proxyURL("socks5", "bob", secret, "socks.corp:1080")},
			"via SOCKS5 proxy socks.corp:1080 (user/password auth as bob from [Proxy] URL; names resolved on this machine)"},
		{Options{ProxyURL: "socks5h://socks.corp:1080", ProxyUser: "bob", ProxyPassword: secret},
			"via SOCKS5 proxy socks.corp:1080 (user/password auth as bob from [Proxy] Username and Password; names resolved by the proxy)"},
		{Options{ProxyURL: "SOCKS5H://socks.corp:1080"}, "via SOCKS5 proxy socks.corp:1080 (no auth; names resolved by the proxy)"},
		{Options{ProxyURL: "direct"}, "direct"},
		{Options{ProxyURL: " None "}, "direct"},
		{Options{}, "direct (no [Proxy] URL and no HTTPS_PROXY in the environment)"},
		{Options{ProxyURL: "direct", CAFile: "/etc/pb/ca.pem"}, "direct; also trusting the CAs in /etc/pb/ca.pem"},
	}
	for _, tt := range tests {
		got := Describe(tt.o)
		if got != tt.want {
			t.Errorf("Describe(%q) = %q, want %q", redactRaw(tt.o.ProxyURL), got, tt.want)
		}
		assertNoSecret(t, "Describe", got)
	}
}

func TestEnvironmentProxy(t *testing.T) {
	graph := &http.Request{URL: &url.URL{Scheme: "https", Host: "graph.microsoft.com", Path: "/v1.0/$batch"}}
	chosen := func(t *testing.T, c *http.Client) *url.URL {
		t.Helper()
		tr := c.Transport.(*http.Transport)
		if tr.Proxy == nil {
			return nil
		}
		u, err := tr.Proxy(graph)
		if err != nil {
			t.Fatalf("Proxy func: %v", err)
		}
		return u
	}

	t.Run("HTTPS_PROXY is used", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", proxyURL("http", "alice", secret, "proxy.corp.example:3128"))
		c := newTestClient(t, Options{})
		u := chosen(t, c)
		if u == nil || u.Host != "proxy.corp.example:3128" || u.User.Username() != "alice" {
			t.Fatalf("proxy for %s = %v, want proxy.corp.example:3128 as alice", graph.URL, show(u))
		}
		d := Describe(Options{})
		if want := "via HTTPS_PROXY from the environment (HTTP proxy proxy.corp.example:3128, basic auth as alice)"; d != want {
			t.Errorf("Describe = %q, want %q", d, want)
		}
		assertNoSecret(t, "Describe", d)
	})
	t.Run("read at NewClient time", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("https_proxy", "http://first.corp.example:3128")
		first := newTestClient(t, Options{})
		t.Setenv("https_proxy", "http://second.corp.example:8080")
		second := newTestClient(t, Options{})
		if u := chosen(t, first); u == nil || u.Host != "first.corp.example:3128" {
			t.Errorf("first client proxy = %v, want first.corp.example:3128 (captured at NewClient)", show(u))
		}
		if u := chosen(t, second); u == nil || u.Host != "second.corp.example:8080" {
			t.Errorf("second client proxy = %v, want second.corp.example:8080 (environment re-read)", show(u))
		}
	})
	t.Run("NO_PROXY exempts a host", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
		t.Setenv("NO_PROXY", ".microsoft.com")
		c := newTestClient(t, Options{})
		if u := chosen(t, c); u != nil {
			t.Errorf("proxy for %s = %v, want none (NO_PROXY)", graph.URL, show(u))
		}
		if d := Describe(Options{}); !strings.HasSuffix(d, "; NO_PROXY=.microsoft.com)") {
			t.Errorf("Describe = %q, want the NO_PROXY value", d)
		}
	})
	t.Run("direct overrides the environment", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
		for _, v := range []string{"direct", "none", "DIRECT"} {
			c := newTestClient(t, Options{ProxyURL: v})
			if u := chosen(t, c); u != nil {
				t.Errorf("ProxyURL %q: proxy = %v, want none", v, show(u))
			}
		}
		if d := Describe(Options{ProxyURL: "direct"}); d != "direct (ignoring HTTPS_PROXY from the environment)" {
			t.Errorf("Describe = %q", d)
		}
	})
	t.Run("explicit URL overrides the environment", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", "http://"+closedPort(t))
		ca := newTestCA(t)
		tg := newTarget(t, loopbackCert(t, ca))
		px := startConnectProxy(t, &connectProxy{})
		c := newTestClient(t, Options{ProxyURL: "http://" + px.addr(), CAFile: writeTemp(t, "ca.pem", ca.CertPEM)})
		if u := chosen(t, c); u != nil {
			t.Errorf("net/http picks proxy %v, want none: [Proxy] URL has its own CONNECT", show(u))
		}
		if _, _, err := get(t, c, tg.URL); err != nil {
			t.Fatalf("request through [Proxy] URL: %v", err)
		}
		if got := px.seenTargets(); len(got) != 1 {
			t.Errorf("the [Proxy] URL proxy saw %v, want the one tunnel", got)
		}
	})
	t.Run("HTTP_PROXY alone does not cover HTTPS", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTP_PROXY", "http://proxy.corp.example:3128")
		var logs bytes.Buffer
		c := newTestClient(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if u := chosen(t, c); u != nil {
			t.Errorf("proxy for https = %v, want none", show(u))
		}
		if d := Describe(Options{}); !strings.Contains(d, "HTTP_PROXY from the environment applies to http:// URLs only") {
			t.Errorf("Describe = %q", d)
		}
		if !strings.Contains(logs.String(), "HTTP_PROXY is set but HTTPS_PROXY is not") {
			t.Errorf("no warning logged: %s", logs.String())
		}
	})
	t.Run("invalid environment value", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", "http://alice:"+secret+"@proxy corp:3128")
		_, err := NewClient(Options{})
		if err == nil || !strings.Contains(err.Error(), "environment variable HTTPS_PROXY holds an invalid proxy URL") {
			t.Fatalf("err = %v, want the invalid HTTPS_PROXY named", err)
		}
		assertNoSecret(t, "error", err.Error())
	})
}

// TestDialFailuresNameTheHop drives real failed connections (closed ports,
// a DNS server answering NXDOMAIN) and checks Explain names the right hop.
func TestDialFailuresNameTheHop(t *testing.T) {
	nx := startNXDOMAIN(t)
	deadProxy := closedPort(t)
	deadTarget := closedPort(t)
	tests := []struct {
		name     string
		proxyURL string
		url      string
		want     []string
	}{
		{
			name:     "HTTP proxy refused",
			proxyURL: proxyURL("http", "alice", secret, deadProxy),
			url:      "https://login.microsoftonline.com/common",
			want:     []string{"Proxy: the HTTP proxy " + deadProxy + " refused the connection", "check the host and port in [Proxy] URL"},
		},
		{
			name:     "SOCKS5 proxy refused",
			proxyURL: proxyURL("socks5h", "bob", secret, deadProxy),
			url:      "https://login.microsoftonline.com/common",
			want:     []string{"Proxy: the SOCKS5 proxy " + deadProxy + " refused the connection"},
		},
		{
			name:     "target refused",
			proxyURL: "direct",
			url:      "https://" + deadTarget + "/",
			want:     []string{"Network: the target " + deadTarget + " refused the connection", "or set [Proxy] URL"},
		},
		{
			name:     "target name unknown",
			proxyURL: "direct",
			url:      "https://login.microsoftonline.com/common",
			want:     []string{"DNS: cannot resolve login.microsoftonline.com (no such host)", "check the DNS server or set [Proxy] URL"},
		},
		{
			name:     "proxy name unknown",
			proxyURL: proxyURL("http", "alice", secret, "proxy.corp.example:3128"),
			url:      "https://login.microsoftonline.com/common",
			want:     []string{"DNS: cannot resolve the HTTP proxy host proxy.corp.example (no such host)", "check the host name in [Proxy] URL"},
		},
		{
			name:     "target name unknown, resolved here for socks5",
			proxyURL: proxyURL("socks5", "", "", deadProxy),
			url:      "https://login.microsoftonline.com/common",
			want:     []string{"DNS: cannot resolve login.microsoftonline.com (no such host) on this machine", "socks5h://"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := newClient(Options{ProxyURL: tt.proxyURL}, nx)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = get(t, c, tt.url)
			if err == nil {
				t.Fatal("request succeeded")
			}
			got := Explain(err)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Explain = %q, want it to contain %q (err: %v)", got, w, err)
				}
			}
			assertNoSecret(t, "error", err.Error())
			assertNoSecret(t, "Explain", got)
		})
	}

	t.Run("proxy from the environment", func(t *testing.T) {
		clearProxyEnv(t)
		t.Setenv("HTTPS_PROXY", proxyURL("http", "alice", secret, "proxy.corp.example:3128"))
		c, err := newClient(Options{}, nx)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = get(t, c, "https://graph.microsoft.com/v1.0/$batch")
		got := Explain(err)
		want := "DNS: cannot resolve the HTTP proxy host proxy.corp.example (no such host); check the host name in the HTTPS_PROXY environment variable"
		if !strings.HasPrefix(got, want) {
			t.Errorf("Explain = %q, want prefix %q (err: %v)", got, want, err)
		}
	})

	t.Run("connect timeouts", func(t *testing.T) {
		// A dial whose deadline has passed fails with a timeout at once;
		// wrap it as net/http would and check which hop Explain blames.
		dial := func(proxyURL, addr string) error {
			c, err := newClient(Options{ProxyURL: proxyURL}, nx)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
			defer cancel()
			_, err = c.Transport.(*http.Transport).DialContext(ctx, "tcp", addr)
			return err
		}
		perr := dial("http://"+deadProxy, "login.microsoftonline.com:443")
		terr := dial("direct", deadTarget)
		for _, tc := range []struct {
			err  error
			want string
		}{
			{&url.Error{Op: "Get", URL: "https://login.microsoftonline.com/", Err: perr},
				"Proxy: connecting to the HTTP proxy " + deadProxy + " timed out"},
			{&url.Error{Op: "Get", URL: "https://" + deadTarget + "/", Err: terr},
				"Network: connecting to the target " + deadTarget + " timed out"},
		} {
			var ue *url.Error = tc.err.(*url.Error)
			if !ue.Timeout() {
				t.Errorf("%v: Timeout() = false; the hop tag must keep net.Error semantics", tc.err)
			}
			if got := Explain(tc.err); !strings.HasPrefix(got, tc.want) {
				t.Errorf("Explain(%v) = %q, want prefix %q", tc.err, got, tc.want)
			}
		}
	})
}

func TestExplainOther(t *testing.T) {
	urlErr := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://graph.microsoft.com/v1.0/$batch", Err: err}
	}
	tests := []struct {
		name string
		err  error
		want string // prefix; "" means Explain must return ""
	}{
		{"nil", nil, ""},
		{"unrelated", errors.New("boom"), ""},
		{"canceled", urlErr(context.Canceled), ""},
		{"bare DNS error", urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Name: "graph.microsoft.com", Err: "server misbehaving"}}),
			"DNS: cannot resolve graph.microsoft.com (server misbehaving); check the DNS server or set [Proxy] URL"},
		{"EOF", urlErr(io.EOF), "Network: the connection to graph.microsoft.com was closed before a reply"},
		{"deadline", urlErr(context.DeadlineExceeded), "Network: no reply from graph.microsoft.com in time"},
		{"not TLS", urlErr(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), "TLS: graph.microsoft.com did not answer with TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Explain(tt.err)
			if tt.want == "" && got != "" || !strings.HasPrefix(got, tt.want) {
				t.Errorf("Explain = %q, want prefix %q", got, tt.want)
			}
		})
	}
}
