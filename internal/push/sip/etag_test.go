package sip

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/clock"
	"github.com/presencebridge/presencebridge/internal/kamailio"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// scriptedServer is a UDP SIP server on loopback that answers PUBLISH with the
// status its script gives for each request, and records the requests.
type scriptedServer struct {
	conn   net.PacketConn
	mu     sync.Mutex
	reqs   []string
	answer func(req string, n int) (code int, reason string)
}

func newScripted(t *testing.T, answer func(req string, n int) (int, string)) *scriptedServer {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{conn: conn, answer: answer}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			if !strings.HasPrefix(req, "PUBLISH ") {
				continue
			}
			s.mu.Lock()
			s.reqs = append(s.reqs, req)
			i := len(s.reqs)
			s.mu.Unlock()
			code, reason := s.answer(req, i)
			var b strings.Builder
			b.WriteString("SIP/2.0 " + itoa(code) + " " + reason + "\r\n")
			for _, h := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
				b.WriteString(h + ": " + hdr(req, h) + "\r\n")
			}
			if code == 200 {
				b.WriteString("SIP-ETag: etag-" + itoa(i) + "\r\nExpires: 3600\r\n")
			}
			b.WriteString("Content-Length: 0\r\n\r\n")
			conn.WriteTo([]byte(b.String()), from)
		}
	}()
	return s
}

func (s *scriptedServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

func itoa(n int) string { return strconv.Itoa(n) }

func hdr(req, name string) string {
	head, _, _ := strings.Cut(req, "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n")[1:] {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func body(req string) string {
	_, b, _ := strings.Cut(req, "\r\n\r\n")
	return b
}

// A 412 on a conditional PUBLISH makes the publisher publish afresh, without SIP-If-Match.
func TestPreconditionFailedPublishesAfresh(t *testing.T) {
	srv := newScripted(t, func(req string, n int) (int, string) {
		if hdr(req, "SIP-If-Match") != "" {
			return 412, "Conditional Request Failed"
		}
		return 200, "OK"
	})
	p := newPublisher(t, Options{Server: srv.conn.LocalAddr().String()})
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d PUBLISH requests, want 3 (initial, conditional refused with 412, afresh)", len(reqs))
	}
	if hdr(reqs[1], "SIP-If-Match") != "etag-1" || hdr(reqs[2], "SIP-If-Match") != "" || !strings.Contains(body(reqs[2]), "Away") {
		t.Errorf("requests:\n%s\n---\n%s", reqs[1], reqs[2])
	}
	if got := p.publication(uri).ETag; got != "etag-3" {
		t.Errorf("kept ETag %q, want etag-3", got)
	}
	for _, r := range reqs {
		if hdr(r, "Event") != "presence" || hdr(r, "Expires") != "3600" {
			t.Errorf("request lacks Event: presence / Expires: 3600:\n%s", r)
		}
	}
}

// Before a publication expires it is refreshed with SIP-If-Match and no body; at
// Kamailio the watcher's state stays and the publication lives on.
func TestRefreshBeforeExpiry(t *testing.T) {
	k := startKamailio(t, kamailio.Options{})
	clk := clock.NewFake(time.Now())
	p := newPublisher(t, Options{Server: k.UDP, Expires: 10 * time.Minute, Clock: clk})
	uri := "sip:1006@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	first := p.publication(uri)
	if n := p.RefreshDue(t.Context()); n != 0 {
		t.Fatalf("refreshed %d publications right after publishing", n)
	}
	clk.Advance(9 * time.Minute) // within the last 20% of the lifetime
	if n := p.RefreshDue(t.Context()); n != 1 {
		t.Fatalf("refreshed %d publications at 90%% of their life, want 1", n)
	}
	after := p.publication(uri)
	if after == nil || !after.Expires.After(first.Expires) || after.ETag == "" {
		t.Fatalf("after refresh: %+v (before %+v)", after, first)
	}
	// The refreshed ETag is good for a modification.
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(k.LogTail(50), "ERROR") {
		t.Errorf("Kamailio logged errors:\n%s", k.LogTail(50))
	}
}

// A refresh the server refuses with 412 (it lost the publication) publishes the
// last body afresh, without SIP-If-Match.
func TestRefreshRefusedPublishesAfresh(t *testing.T) {
	srv := newScripted(t, func(req string, n int) (int, string) {
		if hdr(req, "SIP-If-Match") != "" {
			return 412, "Conditional Request Failed"
		}
		return 200, "OK"
	})
	clk := clock.NewFake(time.Now())
	p := newPublisher(t, Options{Server: srv.conn.LocalAddr().String(), Expires: 10 * time.Minute, Clock: clk})
	uri := "sip:1007@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(55 * time.Minute) // the server granted 3600 s: within its last 20%
	if n := p.RefreshDue(t.Context()); n != 1 {
		t.Fatalf("refreshed %d", n)
	}
	reqs := srv.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want publish, refused refresh, publish afresh", len(reqs))
	}
	if hdr(reqs[1], "SIP-If-Match") != "etag-1" || body(reqs[1]) != "" || hdr(reqs[1], "Content-Type") != "" {
		t.Errorf("refresh should carry SIP-If-Match and no body:\n%s", reqs[1])
	}
	if hdr(reqs[2], "SIP-If-Match") != "" || !strings.Contains(body(reqs[2]), "In a call") {
		t.Errorf("after the 412 the last body should be published afresh:\n%s", reqs[2])
	}
	if got := p.publication(uri).ETag; got != "etag-3" {
		t.Errorf("kept ETag %q, want etag-3", got)
	}
}
