package sip

import (
	"bytes"
	"encoding/xml"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// The fuzz targets cover what presencebridge reads from a SIP server's answers
// (SIP-ETag, Expires, Min-Expires, digest challenges) and the PIDF it writes.
// `make test` runs their seeds; `make fuzz` explores from them.

const (
	fuzzUser     = "presencebridge"
	fuzzPassword = "pw-Fuzz-7f3a;secret"
	fuzzURI      = "sip:1001@pbx.example"
)

// maxDeltaSeconds is the largest Expires or Min-Expires RFC 3261 allows
// (sections 20.19 and 20.23: 2**32-1 seconds).
const maxDeltaSeconds = 1<<32 - 1

var fuzzKey = Key{URI: fuzzURI, Event: EventPresence}

// fuzzPublisher is a Publisher that only reads answers: no user agent, no network.
func fuzzPublisher() *Publisher {
	s := Settings{Transport: "udp", Event: EventPresence, Server: "pbx.example:5060", Expires: time.Hour, Username: fuzzUser, Password: fuzzPassword}
	return &Publisher{o: Options{Settings: s, Clock: clock.Real{}}, conn: &Conn{o: s, Dest: s.Server},
		log: slog.New(slog.DiscardHandler), dest: "pbx.example:5060",
		events: s.Events(), pubs: map[Key]*Publication{}, dirty: map[Key]*Publication{}, wake: make(chan struct{}, 1)}
}

func sipResponse(status, extra string) []byte {
	return []byte("SIP/2.0 " + status + "\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=192.0.2.10;rport=5060\r\n" +
		"From: <sip:1001@pbx.example>;tag=1928301774\r\nTo: <sip:1001@pbx.example>;tag=a6c85cf\r\n" +
		"Call-ID: a84b4c76e66710@192.0.2.10\r\nCSeq: 314159 PUBLISH\r\n" + extra + "Content-Length: 0\r\n\r\n")
}

// FuzzSIPAnswer parses any bytes as the server's answer to a PUBLISH, with the
// parser sipgo's transport uses, and reads it as the publisher does. The entity
// tag kept is the server's SIP-ETag as sent and goes back unchanged in the next
// SIP-If-Match; the lifetime kept is positive and at most what SIP allows, and
// exactly the server's Expires when that is a valid one; a Min-Expires read is
// valid and goes back unchanged in Expires; a digest challenge is answered with
// credentials that read back (user, realm, nonce, opaque, URI) and never carry the
// password; every refusal names the user's URI and never the password.
func FuzzSIPAnswer(f *testing.F) {
	for _, b := range [][]byte{
		sipResponse("200 OK", "SIP-ETag: dx200xyz\r\nExpires: 3600\r\n"),
		sipResponse("200 OK", "SIP-ETag:  a.b-c_d \r\nExpires: 60\r\n"), // Kamailio's style
		sipResponse("200 OK", "Expires: 0\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: 4294967295\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: 4294967296\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: 9223372036\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: 99999999999999999999\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: -5\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: NaN\r\n"),
		sipResponse("200 OK", "SIP-ETag: x\r\nExpires: 3600;refresher=uac\r\n"),
		sipResponse("200 OK", "SIP-ETag: one\r\nSIP-ETag: two\r\nExpires: 60\r\nExpires: 120\r\n"),
		sipResponse("200 OK", "SIP-ETag: \"quoted, with comma\"\r\n"),
		sipResponse("200 OK", "sip-etag: lower\r\nexpires: 30\r\n"),
		sipResponse("200 OK", "SIP-ETag: folded\r\n continued\r\n"),
		sipResponse("423 Interval Too Brief", "Min-Expires: 7200\r\n"),
		sipResponse("423 Interval Too Brief", "Min-Expires: 99999999999\r\n"),
		sipResponse("423 Interval Too Brief", "Min-Expires: 0\r\n"),
		sipResponse("423 Interval Too Brief", ""),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Digest realm="pbx.example", nonce="5f2a1b3c4d", algorithm=MD5, qop="auth"`+"\r\n"),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Digest realm="pbx.example", nonce="5f2a", algorithm=SHA-256, qop="auth,auth-int", opaque="xyz", stale=true`+"\r\n"),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Digest realm="pbx.example", nonce="n", algorithm=md5-sess`+"\r\n"),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Digest realm="a\"b", nonce="n", qop="auth-int"`+"\r\n"),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Basic realm="pbx"`+"\r\n"),
		sipResponse("401 Unauthorized", `WWW-Authenticate: Digest realm="unterminated`+"\r\n"),
		sipResponse("401 Unauthorized", ""),
		sipResponse("407 Proxy Authentication Required", `Proxy-Authenticate: Digest realm="proxy.example", nonce="abc", algorithm=SHA-512-256, qop="auth"`+"\r\n"),
		sipResponse("407 Proxy Authentication Required", `Proxy-Authenticate: Digest realm="proxy.example", nonce="`+strings.Repeat("n", 4000)+`"`+"\r\n"),
		sipResponse("403 Forbidden", ""),
		sipResponse("404 Not Found", ""),
		sipResponse("412 Conditional Request Failed", ""),
		sipResponse("489 Bad Event", "Allow-Events: dialog\r\n"),
		sipResponse("500 Server Internal Error", ""),
		sipResponse("503 Service Unavailable", "Retry-After: 30\r\n"),
		sipResponse("606 Not Acceptable", ""),
		[]byte("SIP/2.0 200 OK\r\nSIP-ETag: truncated"),
		[]byte("SIP/2.0 200 OK\nSIP-ETag: lf-only\nExpires: 60\n\n"),
		[]byte("PUBLISH sip:1001@pbx.example SIP/2.0\r\nContent-Length: 0\r\n\r\n"),
		[]byte("SIP/2.0 999 Who Knows\r\nContent-Length: 0\r\n\r\n"),
	} {
		f.Add(b)
	}
	target := sip.Uri{}
	if err := sip.ParseUri(fuzzURI, &target); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		msg, err := sip.ParseMessage(raw)
		if err != nil {
			return // sipgo drops it: presencebridge never sees it
		}
		res, ok := msg.(*sip.Response)
		if !ok {
			return
		}
		p := fuzzPublisher()
		checkPublished(t, p, res, target)
		if s, ok := minExpires(res); ok {
			if s <= 0 || s > maxDeltaSeconds {
				t.Fatalf("Min-Expires %q read as %d", res.GetHeader("Min-Expires").Value(), s)
			}
			req := p.build(publishReq{key: fuzzKey, target: target, expires: time.Hour})
			req.ReplaceHeader(sip.NewHeader("Expires", strconv.Itoa(s)))
			if got := reparse(t, req).GetHeader("Expires"); got == nil || got.Value() != strconv.Itoa(s) {
				t.Fatalf("Expires %d sent as %v", s, got)
			}
		}
		if res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired {
			checkChallenge(t, p, res, target, raw)
		}
		if !res.IsSuccess() {
			msg := p.refused(fuzzKey, res).Error()
			if !strings.Contains(msg, "PUBLISH "+fuzzURI+": ") || strings.Contains(msg, fuzzPassword) {
				t.Fatalf("refusal %q does not name the URI, or holds the password", msg)
			}
			msg = p.refused(Key{URI: fuzzURI, Event: EventDialog}, res).Error()
			if !strings.Contains(msg, "PUBLISH "+fuzzURI+" (Event: dialog): ") || strings.Contains(msg, fuzzPassword) {
				t.Fatalf("refusal %q does not name the URI and the event, or holds the password", msg)
			}
		}
	})
}

// checkPublished: what a 2xx leaves in the publication.
func checkPublished(t *testing.T, p *Publisher, res *sip.Response, target sip.Uri) {
	t.Helper()
	before := time.Now()
	pub := p.published(res, presence.Mapped{State: "busy", Basic: "open", Note: "Busy"}, "old-etag", 0)
	after := time.Now()
	if pub.Lifetime <= 0 || pub.Lifetime > maxDeltaSeconds*time.Second {
		t.Fatalf("lifetime %v kept from Expires %v", pub.Lifetime, res.GetHeader("Expires"))
	}
	if pub.Expires.Before(before.Add(pub.Lifetime)) || pub.Expires.After(after.Add(pub.Lifetime)) {
		t.Fatalf("expiry %v is not now + %v", pub.Expires, pub.Lifetime)
	}
	if h := res.GetHeader("Expires"); h != nil {
		if s, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32); err == nil && s > 0 && pub.Lifetime != time.Duration(s)*time.Second {
			t.Fatalf("Expires %q kept as %v", h.Value(), pub.Lifetime)
		}
	}
	want := "old-etag"
	if h := res.GetHeader("SIP-ETag"); h != nil && strings.TrimSpace(h.Value()) != "" {
		want = strings.TrimSpace(h.Value())
	}
	if pub.ETag != want {
		t.Fatalf("entity tag %q kept from %v", pub.ETag, res.GetHeader("SIP-ETag"))
	}
	// The next PUBLISH carries it back unchanged.
	req := p.build(publishReq{key: fuzzKey, target: target, ifMatch: pub.ETag, expires: pub.Lifetime})
	back := reparse(t, req)
	if h := back.GetHeader("SIP-If-Match"); h == nil || h.Value() != pub.ETag {
		t.Fatalf("entity tag %q came back as %v in\n%s", pub.ETag, h, req)
	}
	if h := back.GetHeader("Expires"); h == nil || h.Value() != strconv.Itoa(int(pub.Lifetime/time.Second)) {
		t.Fatalf("lifetime %v came back as Expires %v", pub.Lifetime, h)
	}
}

// checkChallenge: a challenge is refused with an error naming the answer, or
// answered with credentials that read back.
func checkChallenge(t *testing.T, p *Publisher, res *sip.Response, target sip.Uri, raw []byte) {
	t.Helper()
	chal, err := p.conn.auth.learn(res)
	if err != nil {
		if !strings.Contains(err.Error(), strconv.Itoa(res.StatusCode)) || strings.Contains(err.Error(), fuzzPassword) {
			t.Fatalf("challenge refused with %q: does not name the answer, or holds the password", err)
		}
		return
	}
	req := p.build(publishReq{key: fuzzKey, target: target, expires: time.Hour})
	if err := p.conn.auth.answer(req, res.StatusCode, fuzzUser, fuzzPassword); err != nil {
		if strings.Contains(err.Error(), fuzzPassword) {
			t.Fatalf("the password is in %q", err)
		}
		return
	}
	_, name := authHeaders(res.StatusCode)
	h := reparse(t, req).GetHeader(name)
	if h == nil {
		t.Fatalf("no %s in the answer to\n%s", name, raw)
	}
	if strings.Contains(h.Value(), fuzzPassword) && !bytes.Contains(raw, []byte(fuzzPassword)) {
		t.Fatalf("the password is in %s: %s", name, h.Value())
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil {
		t.Fatalf("%s %q does not read back: %v\nchallenge: %+v", name, h.Value(), err, chal)
	}
	if cred.Username != fuzzUser || cred.Realm != chal.Realm || cred.Nonce != chal.Nonce || cred.Opaque != chal.Opaque ||
		cred.URI != req.Recipient.String() || cred.Response == "" {
		t.Fatalf("%s reads back as %+v for challenge %+v", name, cred, chal)
	}
}

// reparse writes req as it goes on the wire and parses it back.
func reparse(t *testing.T, req *sip.Request) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(req.String()))
	if err != nil {
		t.Fatalf("the request does not parse back: %v\n%s", err, req)
	}
	back, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("the request parses back as %T", msg)
	}
	return back
}

// FuzzPIDF writes a PIDF document for any entity, status, activity and note and
// reads it back as a watcher would: it is well-formed XML in the PIDF namespace,
// and the entity, basic status, RPID activity and note come back as given
// (characters XML cannot carry as U+FFFD, as encoding/xml writes them).
func FuzzPIDF(f *testing.F) {
	for _, s := range [][4]string{
		{fuzzURI, "open", "on-the-phone", "In a call"},
		{fuzzURI, "closed", "", "Off work"},
		{`sip:o'brien&co@pbx.example;x="<y>"`, "open", "meeting", `In a meeting <with> "R&D"`},
		{fuzzURI, "", "focus<ing>", "Focusing"},
		{fuzzURI, "OPEN", "busy", "Jürgen ist beschäftigt ☎"},
		{fuzzURI, "open", "away", "tab\there\r\nnew line"},
		{fuzzURI, "open", "away", "]]> <!-- --> &amp; \x00\x01\x7f \ufffe \xed\xa0\x80"},
		{"", "closed", "unknown", ""},
		{fuzzURI, "open", "other", strings.Repeat("long note ", 200)},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, entity, basic, activity, note string) {
		m := presence.Mapped{State: "busy", Basic: basic, Activity: activity, Note: note}
		raw := PIDF(entity, m)
		if !utf8.Valid(raw) {
			t.Fatalf("the document is not UTF-8:\n%q", raw)
		}
		var d pidfDoc
		if err := xml.Unmarshal(raw, &d); err != nil {
			t.Fatalf("the document does not parse: %v\n%s", err, raw)
		}
		wantBasic := "closed"
		if basic == "open" {
			wantBasic = "open"
		}
		if d.Entity != xmlText(entity) || d.Tuple.Basic != wantBasic || d.Tuple.Note != xmlText(note) || d.Person.Note != xmlText(note) {
			t.Fatalf("read back %+v from\n%s", d, raw)
		}
		var acts []string
		for _, a := range d.Person.Activities.Any {
			if a.XMLName.Space != "urn:ietf:params:xml:ns:pidf:rpid" {
				t.Fatalf("activity %v outside the RPID namespace", a.XMLName)
			}
			acts = append(acts, a.XMLName.Local)
		}
		switch {
		case activity == "":
			if len(acts) != 0 {
				t.Fatalf("activities %v for none", acts)
			}
		case slices.Contains(presence.RPIDActivities, activity):
			if !slices.Equal(acts, []string{activity}) {
				t.Fatalf("activities %v for %q", acts, activity)
			}
		default: // <rpid:other> (pidfDoc reads it into Other, not Any)
			if len(acts) != 0 || d.Person.Activities.Other != xmlText(activity) {
				t.Fatalf("activities %v, other %q for %q", acts, d.Person.Activities.Other, activity)
			}
		}
	})
}

// xmlText is s as it reads back from XML text written by encoding/xml: invalid
// UTF-8 and characters XML 1.0 does not allow become U+FFFD
// (each byte of invalid UTF-8 on its own).
func xmlText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if !inXMLRange(r) || r == utf8.RuneError && n == 1 {
			r = '\uFFFD'
		}
		b.WriteRune(r)
		s = s[n:]
	}
	return b.String()
}

// inXMLRange is XML 1.0's Char production.
func inXMLRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// FuzzDialogInfo writes a dialog-info document for any entity, version, state
// word and dialog column and reads it back as a watcher would: well-formed XML
// in RFC 4235's namespace, full state, the entity and version as given, and
// what a BLF key shows: one dialog of presencebridge's (DialogID) in the state
// the mapping gives when that is confirmed or early, with the user as local
// identity and target, and no dialog otherwise.
func FuzzDialogInfo(f *testing.F) {
	for _, s := range []struct {
		entity        string
		version       uint64
		state, column string
	}{
		{fuzzURI, 0, "oncall", ""},
		{fuzzURI, 1, "available", ""},
		{fuzzURI, 1<<64 - 1, "busy", "early"},
		{fuzzURI, 7, "dnd", "terminated"},
		{`sip:o'brien&co@pbx.example;x="<y>"`, 3, "BUSY", ""},
		{"sip:\x00\x7f\xed\xa0\x80@pbx", 2, "custom", "confirmed"},
		{"", 0, "", "<state>confirmed</state>"},
	} {
		f.Add(s.entity, s.version, s.state, s.column)
	}
	f.Fuzz(func(t *testing.T, entity string, version uint64, state, column string) {
		m := presence.Mapped{State: state, Basic: "open", Dialog: column}
		raw := DialogInfo(entity, version, m)
		if !utf8.Valid(raw) {
			t.Fatalf("the document is not UTF-8:\n%q", raw)
		}
		var d doc
		if err := xml.Unmarshal(raw, &d); err != nil {
			t.Fatalf("the document does not parse: %v\n%s", err, raw)
		}
		if err := xml.Unmarshal(raw, &struct {
			XMLName *xml.Name `xml:"urn:ietf:params:xml:ns:dialog-info dialog-info"`
		}{}); err != nil {
			t.Fatalf("the root is not RFC 4235's dialog-info: %v\n%s", err, raw)
		}
		if d.Entity != xmlText(entity) || d.Version != strconv.FormatUint(version, 10) || d.State != "full" {
			t.Fatalf("read back entity %q version %q state %q from\n%s", d.Entity, d.Version, d.State, raw)
		}
		want := m.DialogState()
		if want != "confirmed" && want != "early" {
			if len(d.Dialogs) != 0 {
				t.Fatalf("%q shows dialogs %+v", want, d.Dialogs)
			}
			return
		}
		if len(d.Dialogs) != 1 || d.Dialogs[0].ID != DialogID || d.Dialogs[0].State != want ||
			d.Dialogs[0].Identity != xmlText(entity) || d.Dialogs[0].Target.URI != xmlText(entity) {
			t.Fatalf("%q: dialogs %+v from\n%s", want, d.Dialogs, raw)
		}
	})
}
