package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// newTestCA is a private CA generated for one test; clients trust its CertPEM.
func newTestCA(t *testing.T) *pki.CA {
	t.Helper()
	return testkit.NewCA(t, pki.Options{CommonName: "Test Inspection CA", Organization: "presencebridge tests"})
}

// loopbackCert is a valid server certificate from ca for 127.0.0.1 and localhost.
func loopbackCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	return testkit.Issue(t, ca, pki.Options{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}).TLS()
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// target is an HTTPS server standing in for login/Graph; it counts requests.
type target struct {
	*httptest.Server
	hits atomic.Int64
}

func newTarget(t *testing.T, cert tls.Certificate) *target {
	t.Helper()
	tg := &target{}
	tg.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.hits.Add(1)
		fmt.Fprintf(w, "hello over %s", r.Proto)
	}))
	tg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	tg.EnableHTTP2 = true
	tg.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are what some tests want
	tg.StartTLS()
	t.Cleanup(tg.Close)
	return tg
}

// port returns the target's port, for URLs that name it as localhost.
func (tg *target) port() string {
	_, p, _ := net.SplitHostPort(tg.Listener.Addr().String())
	return p
}

// loopServer is a TCP server on 127.0.0.1 that runs handle per connection and
// closes every connection it saw on cleanup.
type loopServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startLoop(t *testing.T, handle func(net.Conn)) *loopServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &loopServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.track(c)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.conns = nil
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// track registers c for closing on cleanup (or closes it if cleanup ran).
func (s *loopServer) track(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
}

func (s *loopServer) addr() string { return s.ln.Addr().String() }

// pipe copies both ways until either side ends.
func pipe(client io.Reader, clientConn, upstream net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(upstream, client); done <- struct{}{} }()
	go func() { io.Copy(clientConn, upstream); done <- struct{}{} }()
	<-done
	clientConn.Close()
	upstream.Close()
	<-done
}

// connectProxy is an HTTP CONNECT proxy that keeps connections alive
// between 407s, as real proxies do. With user set it takes Basic with user
// and pass; with ntlmUser set it runs an NTLM (or Negotiate) handshake and
// takes an AUTHENTICATE message for that user (it does not check the
// password: Squid's ntlm_fake_auth does not either; the integration tests
// run the real thing); with status set it answers every CONNECT with that
// status. authenticate lists the Proxy-Authenticate offers of a 407.
type connectProxy struct {
	*loopServer
	user, pass   string
	ntlmUser     string // DOMAIN\user as the AUTHENTICATE message names it
	oldLayout    bool   // send the 40-byte CHALLENGE layout with a TargetName offset past the end, as ntlm_fake_auth does
	closeOn407   bool   // close the connection after every 407
	closeMidNTLM bool   // close the connection after sending the NTLM challenge
	status       int
	authenticate []string // Proxy-Authenticate values on 407

	tunnels atomic.Int64
	conns   atomic.Int64
	closed  atomic.Int64 // connections that ended
	mu      sync.Mutex
	targets []string
	schemes []string // the scheme of every CONNECT's Proxy-Authorization, "-" for none
}

func startConnectProxy(t *testing.T, p *connectProxy) *connectProxy {
	if p.authenticate == nil {
		p.authenticate = []string{`Basic realm="test proxy"`}
	}
	p.loopServer = startLoop(t, p.handle)
	return p
}

func (p *connectProxy) handle(c net.Conn) {
	p.conns.Add(1)
	defer p.closed.Add(1)
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !p.serve(c, br, req) {
			return
		}
	}
}

// serve answers one request; false ends the connection (or it became a tunnel).
func (p *connectProxy) serve(c net.Conn, br *bufio.Reader, req *http.Request) bool {
	authz := req.Header.Get("Proxy-Authorization")
	scheme, token, _ := strings.Cut(authz, " ")
	if authz == "" {
		scheme = "-"
	}
	p.mu.Lock()
	p.schemes = append(p.schemes, scheme)
	p.mu.Unlock()
	reply := func(code int, offers ...string) bool {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
		for _, a := range offers {
			fmt.Fprintf(c, "Proxy-Authenticate: %s\r\n", a)
		}
		body := "<html>refused</html>"
		if code == http.StatusProxyAuthRequired && !p.closeOn407 {
			fmt.Fprintf(c, "Content-Length: %d\r\n\r\n%s", len(body), body)
			return true
		}
		fmt.Fprintf(c, "Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		return false
	}
	switch {
	case req.Method != http.MethodConnect:
		return reply(http.StatusMethodNotAllowed)
	case p.status != 0:
		return reply(p.status)
	case p.ntlmUser != "" && (scheme == "NTLM" || scheme == "Negotiate"):
		msg, err := base64.StdEncoding.DecodeString(token)
		if err != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00" {
			return reply(http.StatusBadRequest)
		}
		switch msg[8] {
		case 1:
			ok := reply(http.StatusProxyAuthRequired, scheme+" "+base64.StdEncoding.EncodeToString(testChallenge(p.oldLayout)))
			return ok && !p.closeMidNTLM
		case 3:
			if ntlmUserOf(msg) != p.ntlmUser {
				return reply(http.StatusProxyAuthRequired, p.authenticate...)
			}
		default:
			return reply(http.StatusBadRequest)
		}
	case p.user != "":
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
		if authz != want {
			return reply(http.StatusProxyAuthRequired, p.authenticate...)
		}
	case p.ntlmUser != "":
		return reply(http.StatusProxyAuthRequired, p.authenticate...)
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		return reply(http.StatusBadGateway)
	}
	p.track(up)
	p.tunnels.Add(1)
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	pipe(br, c, up)
	return false
}

// testChallenge is an NTLM CHALLENGE message (MS-NLMP 2.2.1.2) with target
// name CORP and target info (NetBIOS domain name, end of list); oldLayout
// gives the 40-byte layout without target info and a TargetName offset past
// the end, as Squid 5's ntlm_fake_auth sends it.
func testChallenge(oldLayout bool) []byte {
	utf16 := func(s string) []byte {
		var b []byte
		for _, r := range s {
			b = binary.LittleEndian.AppendUint16(b, uint16(r))
		}
		return b
	}
	const flags = 0x00000001 | 0x00000200 | 0x00008000 | 0x00080000 | 0x00800000 | 0x20000000 | 0x80000000 // UNICODE NTLM ALWAYS_SIGN ESS TARGET_INFO 128 56
	name := utf16("CORP")
	info := binary.LittleEndian.AppendUint16(nil, 2) // MsvAvNbDomainName
	info = binary.LittleEndian.AppendUint16(info, uint16(len(name)))
	info = append(info, name...)
	info = append(info, 0, 0, 0, 0) // MsvAvEOL
	msg := []byte("NTLMSSP\x00\x02\x00\x00\x00")
	field := func(n, off int) {
		msg = binary.LittleEndian.AppendUint16(msg, uint16(n))
		msg = binary.LittleEndian.AppendUint16(msg, uint16(n))
		msg = binary.LittleEndian.AppendUint32(msg, uint32(off))
	}
	if oldLayout {
		field(len(name), 0xAAAAAAAE)
		msg = binary.LittleEndian.AppendUint32(msg, flags&^0x00800000)
		msg = append(msg, 1, 2, 3, 4, 5, 6, 7, 8)
		msg = append(msg, 0, 0, 0, 0, 0, 0, 0, 0)
		return append(msg, name...)
	}
	field(len(name), 56)
	msg = binary.LittleEndian.AppendUint32(msg, flags)
	msg = append(msg, 1, 2, 3, 4, 5, 6, 7, 8)
	msg = append(msg, 0, 0, 0, 0, 0, 0, 0, 0)
	field(len(info), 56+len(name))
	msg = append(msg, 6, 1, 0xb1, 0x1d, 0, 0, 0, 15) // version
	msg = append(msg, name...)
	return append(msg, info...)
}

// ntlmUserOf returns DOMAIN\user (or user) from an AUTHENTICATE message.
func ntlmUserOf(msg []byte) string {
	str := func(at int) string {
		if at+8 > len(msg) {
			return ""
		}
		n := int(binary.LittleEndian.Uint16(msg[at:]))
		off := int(binary.LittleEndian.Uint32(msg[at+4:]))
		if off+n > len(msg) {
			return ""
		}
		var rs []rune
		for i := off; i+1 < off+n; i += 2 {
			rs = append(rs, rune(binary.LittleEndian.Uint16(msg[i:])))
		}
		return string(rs)
	}
	if d := str(28); d != "" {
		return d + "\\" + str(36)
	}
	return str(36)
}

func (p *connectProxy) seenSchemes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.schemes...)
}

func (p *connectProxy) seenTargets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// socksServer is a SOCKS5 server (RFC 1928, CONNECT only) with optional
// username/password authentication (RFC 1929).
type socksServer struct {
	*loopServer
	user, pass string

	tunnels atomic.Int64
	mu      sync.Mutex
	reqs    []socksRequest
}

// socksRequest is what a client asked for: the address type and the address.
type socksRequest struct {
	atyp byte // 1 IPv4, 3 domain name, 4 IPv6
	addr string
	user string
}

func startSOCKS(t *testing.T, s *socksServer) *socksServer {
	s.loopServer = startLoop(t, s.handle)
	return s
}

func (s *socksServer) handle(c net.Conn) {
	br := bufio.NewReader(c)
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return
	}
	want := byte(0x00)
	if s.user != "" {
		want = 0x02
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		c.Write([]byte{5, 0xFF})
		return
	}
	c.Write([]byte{5, want})
	user := ""
	if want == 0x02 {
		// RFC 1929: VER=1 ULEN UNAME PLEN PASSWD.
		readField := func() (string, error) {
			n, err := br.ReadByte()
			if err != nil {
				return "", err
			}
			b := make([]byte, n)
			_, err = io.ReadFull(br, b)
			return string(b), err
		}
		if v, err := br.ReadByte(); err != nil || v != 1 {
			return
		}
		u, err := readField()
		if err != nil {
			return
		}
		pw, err := readField()
		if err != nil {
			return
		}
		if u != s.user || pw != s.pass {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
		user = u
	}
	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
	var rq [4]byte
	if _, err := io.ReadFull(br, rq[:]); err != nil || rq[0] != 5 || rq[1] != 1 {
		return
	}
	var host string
	switch rq[3] {
	case 1, 4:
		b := make([]byte, map[byte]int{1: 4, 4: 16}[rq[3]])
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		host = net.IP(b).String()
	case 3:
		n, err := br.ReadByte()
		if err != nil {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		host = string(b)
	default:
		return
	}
	var pb [2]byte
	if _, err := io.ReadFull(br, pb[:]); err != nil {
		return
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb[:]))))
	s.mu.Lock()
	s.reqs = append(s.reqs, socksRequest{atyp: rq[3], addr: addr, user: user})
	s.mu.Unlock()
	up, err := net.Dial("tcp", addr)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // 0x05 connection refused
		return
	}
	s.track(up)
	s.tunnels.Add(1)
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	pipe(br, c, up)
}

func (s *socksServer) requests() []socksRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]socksRequest(nil), s.reqs...)
}

// startNXDOMAIN runs a DNS server on 127.0.0.1 (UDP) that answers every query
// with NXDOMAIN, and returns a dialer whose resolver uses only it.
func startNXDOMAIN(t *testing.T) *net.Dialer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			// Header plus the question (name labels, QTYPE, QCLASS); drop
			// the additional records (EDNS0) the query may carry.
			end := 12
			for end < n && buf[end] != 0 {
				end += int(buf[end]) + 1
			}
			end += 5
			if end > n {
				continue
			}
			resp := append([]byte(nil), buf[:end]...)
			resp[2] = 0x80 | 0x04 | (buf[2] & 0x01) // QR, AA, RD copied
			resp[3] = 0x80 | 0x03                   // RA, RCODE=NXDOMAIN
			binary.BigEndian.PutUint16(resp[4:], 1)
			for i := 6; i < 12; i++ {
				resp[i] = 0
			}
			pc.WriteTo(resp, from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	dnsAddr := pc.LocalAddr().String()
	return &net.Dialer{
		Timeout: 5 * time.Second,
		Resolver: &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "udp", dnsAddr)
			},
		},
	}
}

// closedPort returns a 127.0.0.1 address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
