package squid

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ntlmssp "github.com/Azure/go-ntlmssp"

	"github.com/presencebridge/presencebridge/internal/testkit"
)

// Vectors from `openssl passwd -1 -salt <salt> <password>`.
func TestMD5Crypt(t *testing.T) {
	for _, tc := range []struct{ pw, salt, want string }{
		{"x y", "abcdefgh", "$1$abcdefgh$Cqv.a28nAjfX1LYfOjv5N0"},
		{"pr0xy p@ss:%é", "abcdefgh", "$1$abcdefgh$0x/g5DQJolsVA183AMzXR1"},
		{"", "abcdefgh", "$1$abcdefgh$M55TzYaaccxVGbptZWaxX/"},
		{"a", "abcdefgh", "$1$abcdefgh$jUYc1Xi7pkozuzWQ0Dft71"},
		{"hello", "ab", "$1$ab$GG.jb7EqbyCQUXKGIbIxc0"},
	} {
		if got := md5Crypt(tc.pw, tc.salt); got != tc.want {
			t.Errorf("md5Crypt(%q, %q) = %q, want %q", tc.pw, tc.salt, got, tc.want)
		}
	}
}

func TestParseLine(t *testing.T) {
	r, err := parseLine(`1795895570.302 200 CONNECT 127.0.0.1:39200 CORP%5Calice NTLM%20TlRMTVNTUAADAAAAGAAY`)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || r.Method != "CONNECT" || r.URL != "127.0.0.1:39200" || r.User != `CORP\alice` || r.Scheme != "NTLM" {
		t.Errorf("parsed %+v", r)
	}
	if r.Time.Unix() != 1795895570 {
		t.Errorf("time %v", r.Time)
	}
	r, err = parseLine(`1795895570.291 407 CONNECT 127.0.0.1:39200 - -`)
	if err != nil || r.User != "" || r.Scheme != "" || r.Status != 407 {
		t.Errorf("parsed %+v, %v", r, err)
	}
	if _, err := parseLine(`1795895570.291 407 CONNECT 127.0.0.1:39200 - Basic YWxpY2U6czNjcmV0`); err == nil || strings.Contains(err.Error(), "YWxp") {
		t.Errorf("a malformed line: err = %v; want an error without the credentials", err)
	}
}

// Without Squid, Require skips a developer's run but fails CI's.
func TestRequireFailsUnderCI(t *testing.T) {
	testkit.CheckToolUnderCI(t, "SQUID", "apt-get install -y squid-openssl", func(tb testing.TB) { Require(tb) })
}

func startSquid(t *testing.T, o Options) *Server {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("squid log:\n%s", s.LogTail(40))
		}
		s.Stop()
	})
	return s
}

// connect opens a tunnel through the proxy to target with the given
// Proxy-Authorization values, one CONNECT per value on the same connection
// while the proxy answers 407; it returns the last status and challenge.
// This client is independent of internal/platform/transport, the code under test.
func connect(t *testing.T, proxy, target string, authz func(challenge string) string) (status int, conn net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	challenge := ""
	for range 4 {
		req := fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
		if a := authz(challenge); a != "" {
			req += "Proxy-Authorization: " + a + "\r\n"
		}
		if _, err := io.WriteString(c, req+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		status = resp.StatusCode
		if status == http.StatusOK {
			break // a tunnel: no body, the target's bytes follow
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if status != http.StatusProxyAuthRequired || authz(resp.Header.Get("Proxy-Authenticate")) == "" {
			break
		}
		challenge = strings.Join(resp.Header.Values("Proxy-Authenticate"), ", ")
	}
	c.SetDeadline(time.Time{})
	return status, c
}

// httpsTarget is a TLS server on loopback and a pool trusting its CA.
func httpsTarget(t *testing.T) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool
}

func getOver(t *testing.T, c net.Conn, host string, pool *x509.CertPool) string {
	t.Helper()
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: host})
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(tc, "GET /probe HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("GET through the tunnel: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func waitFor(t *testing.T, s *Server, ok func([]Request) bool) []Request {
	t.Helper()
	rs, err := s.WaitRequests(10*time.Second, ok)
	if err != nil {
		t.Fatalf("%v; the log holds %+v", err, rs)
	}
	return rs
}

func TestIntegrationSquidModes(t *testing.T) {
	target, pool := httpsTarget(t)
	addr := target.Listener.Addr().String()
	// The Basic password has every character that needs care in a proxy URL.
	const user, pass = "proxyuser", "pr0xy p@ss:%é"

	t.Run("no auth", func(t *testing.T) {
		s := startSquid(t, Options{})
		st, c := connect(t, s.Addr, addr, func(string) string { return "" })
		if st != 200 {
			t.Fatalf("CONNECT status %d", st)
		}
		if got := getOver(t, c, "127.0.0.1", pool); got != "hello /probe" {
			t.Errorf("body %q", got)
		}
		rs := waitFor(t, s, func(rs []Request) bool { return len(rs) == 1 })
		if rs[0].Method != "CONNECT" || rs[0].URL != addr || rs[0].Status != 200 || rs[0].User != "" {
			t.Errorf("logged %+v", rs[0])
		}
	})

	t.Run("basic", func(t *testing.T) {
		s := startSquid(t, Options{Basic: map[string]string{user: pass, "other": "x"}})
		raw, _ := os.ReadFile(filepath.Join(s.Dir, "passwd"))
		if strings.Contains(string(raw), pass) || !strings.Contains(string(raw), user+":$1$") {
			t.Errorf("password file is not MD5-crypt: %d bytes", len(raw))
		}
		basic := func(p string) func(string) string {
			return func(string) string {
				return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+p))
			}
		}
		if st, c := connect(t, s.Addr, addr, func(string) string { return "" }); st != 407 {
			t.Errorf("without credentials: %d, want 407", st)
			c.Close()
		} else {
			c.Close()
		}
		if st, c := connect(t, s.Addr, addr, basic("wrong")); st != 407 {
			t.Errorf("wrong password: %d, want 407", st)
			c.Close()
		} else {
			c.Close()
		}
		st, c := connect(t, s.Addr, addr, basic(pass))
		if st != 200 {
			t.Fatalf("right password: %d, want 200", st)
		}
		getOver(t, c, "127.0.0.1", pool)
		rs := waitFor(t, s, func(rs []Request) bool { return len(Users(rs, 200)) == 1 })
		if got := Users(rs, 200); !slices.Equal(got, []string{user}) {
			t.Errorf("users with 200: %v", got)
		}
		for _, r := range rs {
			if r.Status == 200 && r.Scheme != "Basic" {
				t.Errorf("scheme %q logged for %+v", r.Scheme, r)
			}
		}
	})

	for _, scheme := range []string{"NTLM", "Negotiate"} {
		t.Run(scheme, func(t *testing.T) {
			s := startSquid(t, Options{NTLM: scheme == "NTLM", Negotiate: scheme == "Negotiate"})
			st, c := connect(t, s.Addr, addr, func(challenge string) string {
				switch {
				case challenge == "":
					m, _ := ntlmssp.NewNegotiateMessage("", "")
					return scheme + " " + base64.StdEncoding.EncodeToString(m)
				case strings.HasPrefix(challenge, scheme+" "):
					ch, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(challenge, scheme+" "))
					if err != nil {
						t.Fatal(err)
					}
					m, err := ntlmssp.NewAuthenticateMessage(minimalChallenge(t, ch), `CORP\alice`, pass, nil)
					if err != nil {
						t.Fatal(err)
					}
					return scheme + " " + base64.StdEncoding.EncodeToString(m)
				}
				return ""
			})
			if st != 200 {
				t.Fatalf("%s handshake ended with %d", scheme, st)
			}
			getOver(t, c, "127.0.0.1", pool)
			rs := waitFor(t, s, func(rs []Request) bool { return len(Users(rs, 200)) == 1 })
			if got := Users(rs, 200); len(got) != 1 || !strings.HasSuffix(got[0], "alice") {
				t.Errorf("users with 200: %v, want CORP\\alice", got)
			}
		})
	}

	t.Run("bump", func(t *testing.T) {
		caFile := filepath.Join(t.TempDir(), "target-ca.pem")
		os.WriteFile(caFile, pemCert(target.Certificate()), 0o644)
		s := startSquid(t, Options{Bump: true, UpstreamCAFile: caFile})
		bump, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		bumpPool := x509.NewCertPool()
		bumpPool.AppendCertsFromPEM(bump)
		st, c := connect(t, s.Addr, addr, func(string) string { return "" })
		if st != 200 {
			t.Fatalf("CONNECT status %d", st)
		}
		tc := tls.Client(c, &tls.Config{RootCAs: bumpPool, ServerName: "127.0.0.1"})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS with the inspecting proxy: %v", err)
		}
		issuer := tc.ConnectionState().PeerCertificates[0].Issuer.CommonName
		tc.Close()
		if issuer != "presencebridge test inspection CA" {
			t.Errorf("the target's certificate was issued by %q, want the inspection CA", issuer)
		}
		// The target's own CA does not verify what the proxy presents.
		_, c = connect(t, s.Addr, addr, func(string) string { return "" })
		defer c.Close()
		if err := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}).Handshake(); err == nil {
			t.Error("the inspecting proxy's certificate verified against the target's CA")
		}
	})
}

// minimalChallenge keeps the flags and the server challenge of an NTLM
// CHALLENGE message and drops the rest: ntlm_fake_auth (Squid 5.7) sends the
// old 40-byte layout with a TargetName offset that points nowhere, which
// go-ntlmssp rejects.
func minimalChallenge(t *testing.T, ch []byte) []byte {
	t.Helper()
	if len(ch) < 32 || string(ch[:8]) != "NTLMSSP\x00" || ch[8] != 2 {
		t.Fatalf("not an NTLM challenge: % x", ch)
	}
	out := make([]byte, 48)
	copy(out, ch[:12])          // signature, type
	copy(out[20:32], ch[20:32]) // flags, server challenge
	out[16], out[44] = 48, 48   // empty TargetName and TargetInfo at the end
	return out
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
