package kamailio

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// rawPublish sends a hand-written PUBLISH over UDP to addr and returns the final answer.
func rawPublish(t *testing.T, addr, uri, route string) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="` + uri + `">
<tuple id="t1"><status><basic>open</basic></status><note>In a call</note></tuple>
<dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>
</presence>
`
	if route != "" {
		route = "Route: " + route + "\r\n"
	}
	msg := fmt.Sprintf("PUBLISH %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n%sFrom: <%s>;tag=%s\r\nTo: <%s>\r\nCall-ID: %s\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 120\r\nContent-Type: application/pidf+xml\r\nContent-Length: %d\r\n\r\n%s",
		uri, conn.LocalAddr(), token(), route, uri, token(), uri, token(), len(body), body)
	dst, _ := net.ResolveUDPAddr("udp", addr)
	conn.WriteTo([]byte(msg), dst)
	buf := make([]byte, 65535)
	for {
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to PUBLISH: %v", err)
		}
		if f := strings.Fields(string(buf[:n])); len(f) > 1 && f[1] >= "200" {
			return string(buf[:n])
		}
	}
}

func start(t *testing.T, o Options) *Server {
	t.Helper()
	Require(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func TestPublishReachesWatcher(t *testing.T) {
	s := start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := Watch(ctx, s.UDP, "sip:alice@pbx.example")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	res := rawPublish(t, s.UDP, "sip:alice@pbx.example", "")
	if !strings.HasPrefix(res, "SIP/2.0 200") || header(res, "SIP-ETag") == "" {
		t.Fatalf("PUBLISH answered:\n%s", res)
	}
	n, err := w.WaitFor(ctx, func(n Notify) bool { return n.Basic == "open" })
	if err != nil {
		t.Fatalf("%v\n%s", err, s.LogTail(20))
	}
	if len(n.Activities) != 1 || n.Activities[0] != "on-the-phone" || n.Note != "In a call" {
		t.Errorf("NOTIFY = %+v", n)
	}
}

func TestChallenges(t *testing.T) {
	for _, c := range []struct{ challenge, want string }{{"www", "SIP/2.0 401"}, {"proxy", "SIP/2.0 407"}} {
		s := start(t, Options{Users: map[string]string{"pb": "s3cret"}, Challenge: c.challenge})
		if res := rawPublish(t, s.UDP, "sip:alice@pbx.example", ""); !strings.HasPrefix(res, c.want) {
			t.Errorf("%s: PUBLISH without credentials answered %q, want %s", c.challenge, firstLine(res), c.want)
		}
	}
}

func TestTLSListener(t *testing.T) {
	s := start(t, Options{TLS: true})
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", s.TLS, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to Kamailio with its CA: %v\n%s", err, s.LogTail(20))
	}
	conn.Close()
}

func TestForwardingProxy(t *testing.T) {
	pres := start(t, Options{})
	proxy := start(t, Options{Forward: pres.UDP})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := Watch(ctx, pres.UDP, "sip:bob@pbx.example")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	res := rawPublish(t, proxy.UDP, "sip:bob@pbx.example", "<sip:"+proxy.UDP+";lr>")
	if !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("PUBLISH through the proxy answered:\n%s\nproxy log:\n%s", res, proxy.LogTail(20))
	}
	if _, err := w.WaitFor(ctx, func(n Notify) bool { return n.Basic == "open" && n.Note == "In a call" }); err != nil {
		t.Fatal(err)
	}
}
