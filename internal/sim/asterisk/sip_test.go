package asterisk

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// phone is a minimal SIP user agent over UDP, written for these tests: it
// REGISTERs, SUBSCRIBEs, places and answers a call and hangs up, answering a
// digest challenge when Asterisk sends one. It shares no code with the code
// under test.
type phone struct {
	conn, media    net.PacketConn
	server         *net.UDPAddr
	user, password string
	domain         string
	requests       chan string // requests from Asterisk (INVITE, ACK, BYE, NOTIFY)
	responses      chan string
}

func newPhone(t *testing.T, s *Server, user, password string) *phone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	media, err := net.ListenPacket("udp", "127.0.0.1:0") // the SDP's audio port; nothing reads it
	if err != nil {
		t.Fatal(err)
	}
	server, err := net.ResolveUDPAddr("udp", s.SIPAddr)
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{conn: conn, media: media, server: server, user: user, password: password, domain: s.Domain,
		requests: make(chan string, 32), responses: make(chan string, 32)}
	t.Cleanup(func() { conn.Close(); media.Close() })
	go p.read()
	return p
}

func (p *phone) read() {
	buf := make([]byte, 65535)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		raw := string(buf[:n])
		if strings.HasPrefix(raw, "SIP/2.0 ") {
			p.responses <- raw
		} else {
			p.requests <- raw
		}
	}
}

func (p *phone) local() string { return p.conn.LocalAddr().String() }
func (p *phone) aor() string   { return "sip:" + p.user + "@" + p.domain }

func (p *phone) send(raw string) { _, _ = p.conn.WriteTo([]byte(raw), p.server) }

// request is one request of a dialog or a transaction of its own.
type request struct {
	method, uri    string
	to             string // To URI
	toTag, fromTag string
	callID         string
	cseq           int
	headers        []string // extra "Name: value" lines
	ctype, body    string
}

func (p *phone) build(r request, branch, auth string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\nMax-Forwards: 70\r\n", r.method, r.uri, p.local(), branch)
	to := "<" + r.to + ">"
	if r.toTag != "" {
		to += ";tag=" + r.toTag
	}
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:%s@%s>\r\n",
		p.aor(), r.fromTag, to, r.callID, r.cseq, r.method, p.user, p.local())
	for _, h := range r.headers {
		b.WriteString(h + "\r\n")
	}
	if auth != "" {
		b.WriteString("Authorization: " + auth + "\r\n")
	}
	if r.ctype != "" {
		b.WriteString("Content-Type: " + r.ctype + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(r.body), r.body)
	return b.String()
}

// do sends r and returns its final response; a 401 is answered once with
// digest credentials (r.cseq is raised for the second request, and a challenged
// INVITE is ACKed first, RFC 3261 section 17.1.1.3). The helpers return errors
// rather than end the test: they also run on goroutines of their own.
func (p *phone) do(r *request) (string, error) {
	branch := "z9hG4bK" + token()
	res, err := p.exchange(p.build(*r, branch, ""), r.cseq, r.method)
	if err != nil || code(res) != 401 {
		return res, err
	}
	if r.method == "INVITE" {
		ack := *r
		ack.method, ack.toTag, ack.ctype, ack.body, ack.headers = "ACK", param(header(res, "To"), "tag"), "", "", nil
		p.send(p.build(ack, branch, ""))
	}
	r.cseq++
	auth, err := p.digest(res, r.method, r.uri)
	if err != nil {
		return "", err
	}
	return p.exchange(p.build(*r, "z9hG4bK"+token(), auth), r.cseq, r.method)
}

// exchange sends raw until a final response to it arrives (provisional ones
// stop the retransmissions).
func (p *phone) exchange(raw string, cseq int, method string) (string, error) {
	p.send(raw)
	deadline := time.After(5 * time.Second)
	resend := time.NewTicker(500 * time.Millisecond)
	defer resend.Stop()
	for {
		select {
		case res := <-p.responses:
			if f := strings.Fields(header(res, "CSeq")); len(f) != 2 || f[0] != strconv.Itoa(cseq) || f[1] != method {
				continue
			}
			if code(res) >= 200 {
				return res, nil
			}
			resend.Stop()
		case <-resend.C:
			p.send(raw)
		case <-deadline:
			return "", fmt.Errorf("%s from %s: no final response in 5 s", method, p.user)
		}
	}
}

// digest answers the challenge in res (MD5, qop auth or none).
func (p *phone) digest(res, method, uri string) (string, error) {
	var ch string
	for _, v := range headers(res, "WWW-Authenticate") {
		if a := digestParam(v, "algorithm"); a == "" || strings.EqualFold(a, "MD5") {
			ch = v
			break
		}
	}
	if ch == "" {
		return "", fmt.Errorf("no MD5 digest challenge in:\n%s", res)
	}
	realm, nonce, opaque, qop := digestParam(ch, "realm"), digestParam(ch, "nonce"), digestParam(ch, "opaque"), digestParam(ch, "qop")
	ha1 := md5hex(p.user + ":" + realm + ":" + p.password)
	ha2 := md5hex(method + ":" + uri)
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5`, p.user, realm, nonce, uri)
	if opaque != "" {
		auth += fmt.Sprintf(`, opaque="%s"`, opaque)
	}
	if qop == "" {
		return auth + fmt.Sprintf(`, response="%s"`, md5hex(ha1+":"+nonce+":"+ha2)), nil
	}
	const nc, cnonce = "00000001", "5ca1ab1e"
	return auth + fmt.Sprintf(`, qop=auth, nc=%s, cnonce="%s", response="%s"`, nc, cnonce, md5hex(ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+ha2)), nil
}

// register REGISTERs the phone's contact for a minute.
func (p *phone) register() error {
	r := &request{method: "REGISTER", uri: "sip:" + p.domain, to: p.aor(), fromTag: token(), callID: token(), cseq: 1,
		headers: []string{"Expires: 60"}}
	res, err := p.do(r)
	if err == nil && code(res) != 200 {
		err = fmt.Errorf("REGISTER %s: %s", p.user, firstLine(res))
	}
	return err
}

// sdp is an offer or answer of PCMU audio on the phone's media port.
func (p *phone) sdp() string {
	port := p.media.LocalAddr().(*net.UDPAddr).Port
	return fmt.Sprintf("v=0\r\no=%s 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", p.user, port)
}

// call is a dialog the phone started.
type call struct {
	p      *phone
	invite request
	remote string // the 2xx's Contact URI: the target of ACK and BYE
}

// dial sends INVITE sip:ext@domain with a PCMU offer and returns the call once
// it is answered (after the ACK); any other final answer is an error.
func (p *phone) dial(ext string) (*call, error) {
	uri := "sip:" + ext + "@" + p.domain
	c := &call{p: p, invite: request{method: "INVITE", uri: uri, to: uri, fromTag: token(), callID: token(), cseq: 1,
		ctype: "application/sdp", body: p.sdp()}}
	res, err := p.do(&c.invite)
	if err != nil {
		return nil, err
	}
	if code(res) != 200 {
		return nil, fmt.Errorf("INVITE %s from %s: %s", uri, p.user, firstLine(res))
	}
	c.invite.toTag = param(header(res, "To"), "tag")
	c.remote = strings.Trim(strings.SplitN(header(res, "Contact"), ";", 2)[0], "<> ")
	ack := c.invite
	ack.method, ack.uri, ack.ctype, ack.body = "ACK", c.remote, "", ""
	p.send(p.build(ack, "z9hG4bK"+token(), ""))
	return c, nil
}

// hangUp sends BYE; an answer other than 200 is an error.
func (c *call) hangUp() error {
	bye := c.invite
	bye.method, bye.uri, bye.ctype, bye.body, bye.cseq = "BYE", c.remote, "", "", c.invite.cseq+1
	res, err := c.p.do(&bye)
	if err == nil && code(res) != 200 {
		err = fmt.Errorf("BYE from %s: %s", c.p.user, firstLine(res))
	}
	return err
}

// next returns the next request of method Asterisk sent the phone (other
// methods are answered 200 and skipped).
func (p *phone) next(method string) (string, error) {
	deadline := time.After(5 * time.Second)
	for {
		select {
		case raw := <-p.requests:
			if strings.HasPrefix(raw, method+" ") {
				return raw, nil
			}
			if !strings.HasPrefix(raw, "ACK ") {
				p.reply(raw, 200, "OK", "", "")
			}
		case <-deadline:
			return "", fmt.Errorf("phone %s: no %s from Asterisk in 5 s", p.user, method)
		}
	}
}

// reply answers req; toTag is added to To when it has none; body is SDP.
func (p *phone) reply(req string, status int, reason, toTag, body string) {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", status, reason)
	for _, v := range headers(req, "Via") {
		b.WriteString("Via: " + v + "\r\n")
	}
	to := header(req, "To")
	if toTag != "" && param(to, "tag") == "" {
		to += ";tag=" + toTag
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContact: <sip:%s@%s>\r\n",
		header(req, "From"), to, header(req, "Call-ID"), header(req, "CSeq"), p.user, p.local())
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	p.send(b.String())
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func code(res string) int {
	f := strings.Fields(res)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func firstLine(raw string) string {
	line, _, _ := strings.Cut(raw, "\r\n")
	return line
}

var compact = map[string]string{"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m", "content-type": "c"}

// headers returns every value of a header (full or compact name) in raw.
func headers(raw, name string) []string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	var out []string
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if strings.EqualFold(k, name) || strings.EqualFold(k, compact[strings.ToLower(name)]) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

func header(raw, name string) string {
	if v := headers(raw, name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func param(v, name string) string {
	for _, p := range strings.Split(v, ";")[1:] {
		k, val, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return ""
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
