package transport

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a private CA generated for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Inspection CA", Organization: []string{"presencebridge tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leafOpts shapes a server certificate; zero values give a valid certificate
// for 127.0.0.1 and localhost.
type leafOpts struct {
	dnsNames  []string
	noIP      bool
	notBefore time.Time
	notAfter  time.Time
}

func (ca *testCA) leaf(t *testing.T, o leafOpts) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.dnsNames == nil {
		o.dnsNames = []string{"localhost"}
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: o.dnsNames[0]},
		DNSNames:     o.dnsNames,
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if !o.noIP {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
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

// connectProxy is an HTTP CONNECT proxy. With user set it demands
// Proxy-Authorization Basic and answers 407 otherwise; with status set it
// answers every CONNECT with that status.
type connectProxy struct {
	*loopServer
	user, pass   string
	status       int
	authenticate []string // Proxy-Authenticate values on 407

	tunnels atomic.Int64
	mu      sync.Mutex
	targets []string
}

func startConnectProxy(t *testing.T, p *connectProxy) *connectProxy {
	if p.authenticate == nil {
		p.authenticate = []string{`Basic realm="test proxy"`}
	}
	p.loopServer = startLoop(t, p.handle)
	return p
}

func (p *connectProxy) handle(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	reply := func(code int) {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
		if code == http.StatusProxyAuthRequired {
			for _, a := range p.authenticate {
				fmt.Fprintf(c, "Proxy-Authenticate: %s\r\n", a)
			}
		}
		io.WriteString(c, "Content-Length: 0\r\nConnection: close\r\n\r\n")
	}
	switch {
	case req.Method != http.MethodConnect:
		reply(http.StatusMethodNotAllowed)
		return
	case p.status != 0:
		reply(p.status)
		return
	case p.user != "":
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
		if req.Header.Get("Proxy-Authorization") != want {
			reply(http.StatusProxyAuthRequired)
			return
		}
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		reply(http.StatusBadGateway)
		return
	}
	p.track(up)
	p.tunnels.Add(1)
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	pipe(br, c, up)
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
