package sip

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/presencebridge/presencebridge/internal/delivery"
)

// publishReq is one PUBLISH to send (RFC 3903 section 4): an initial one (body,
// no ifMatch), a modification (body and ifMatch), a refresh (ifMatch, no body)
// or a removal (ifMatch, no body, expires 0).
type publishReq struct {
	key     Key // the user's SIP URI as written in the users file, and the event package
	target  sip.Uri
	ifMatch string
	body    []byte
	expires time.Duration
}

// build makes the request: Request-URI, To and the document's entity are the
// user's URI; From is [SIP] From or the user; Event and Content-Type are the
// publication's event package and its document's type; an outbound proxy gets
// a preloaded Route (RFC 3261 section 8.1.2) while the Request-URI stays the
// user's.
func (p *Publisher) build(r publishReq) *sip.Request {
	req := p.conn.Request(sip.PUBLISH, r.target)
	fromAddr := r.target
	if p.from != nil {
		fromAddr = *p.from
	}
	from := &sip.FromHeader{Address: fromAddr, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: r.target, Params: sip.NewParams()})
	req.AppendHeader(sip.NewHeader("Event", r.key.Event))
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(r.expires/time.Second))))
	if r.ifMatch != "" {
		req.AppendHeader(sip.NewHeader("SIP-If-Match", r.ifMatch))
	}
	if r.body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", contentType(r.key.Event)))
	}
	req.SetBody(r.body)
	return req
}

// contentType is the type of event's documents.
func contentType(event string) string {
	if event == EventDialog {
		return "application/dialog-info+xml" // RFC 4235 section 4
	}
	return "application/pidf+xml" // RFC 3863
}

// transact sends one PUBLISH and follows it up to its final answer
// (Conn.Transact: digest challenges, and a longer Expires after 423 Interval Too
// Brief, RFC 3903 section 6, step 4).
func (p *Publisher) transact(ctx context.Context, r publishReq) (*sip.Response, error) {
	return p.conn.Transact(ctx, p.build(r), r.expires > 0)
}

// minExpires reads the Min-Expires of a 423 Interval Too Brief (RFC 3261
// section 20.23): the shortest lifetime the server grants, in seconds.
func minExpires(res *sip.Response) (int, bool) {
	s, ok := deltaSeconds(res.GetHeader("Min-Expires"))
	return s, ok && s > 0
}

// deltaSeconds reads an Expires or Min-Expires header: a whole number of
// seconds from 0 to 2**32-1 (RFC 3261 sections 20.19 and 20.23). Anything else
// is not a lifetime (9223372037 s would overflow a time.Duration).
func deltaSeconds(h sip.Header) (int, bool) {
	if h == nil {
		return 0, false
	}
	s, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil {
		return 0, false
	}
	return int(s), true
}

// refused turns a final non-2xx answer into the error the dispatcher acts on:
// delivery.Permanent for what the server will never accept for this user, an error
// wrapping delivery.ErrTargetDown when the server says it cannot serve anyone now,
// and a plain (retried) error otherwise.
func (p *Publisher) refused(k Key, res *sip.Response) error {
	c, what := res.StatusCode, fmt.Sprintf("PUBLISH %s: %d %s", k.URI, res.StatusCode, res.Reason)
	dialog := k.Event == EventDialog
	if dialog {
		what = fmt.Sprintf("PUBLISH %s (Event: dialog): %d %s", k.URI, res.StatusCode, res.Reason)
	}
	switch c {
	case sip.StatusUnauthorized, sip.StatusProxyAuthRequired:
		// Retried rather than dropped: the states wait until the credentials are fixed.
		if p.o.Username == "" {
			return fmt.Errorf("%s: the server asks for credentials; set [SIP] Username and Password", what)
		}
		return fmt.Errorf("%s after sending credentials for user %q; check [SIP] Username and Password", what, p.o.Username)
	case sip.StatusNotFound, sip.StatusGone:
		return delivery.Permanent("%s: the server has no such user; check the SIP URI in the users file", what)
	case sip.StatusForbidden:
		state := "presence"
		if dialog {
			state = "dialog state"
		}
		return delivery.Permanent("%s: the server does not let %s publish this user's %s; check the SIP URI in the users file, [SIP] From and the server's presence rules", what, p.fromName(k.URI), state)
	case 489: // Bad Event (RFC 6665 section 8.3.1)
		if dialog {
			return delivery.Permanent("%s: the server takes no dialog publications (Event: dialog); on Kamailio or OpenSIPS load presence_dialoginfo, "+
				"or set [SIP] Event = presence; for Asterisk or FreePBX, which take no PUBLISH of presence or dialog, switch to the [Asterisk] target", what)
		}
		return delivery.Permanent("%s: the server takes no presence publications (Event: presence); for a presence server serving BLF keys "+
			"(Kamailio or OpenSIPS with presence_dialoginfo) switch to [SIP] Event = dialog; for Asterisk or FreePBX, which take no PUBLISH "+
			"of presence or dialog, switch to the [Asterisk] target", what)
	case sip.StatusMethodNotAllowed, sip.StatusNotImplemented:
		return delivery.Permanent("%s: the server does not take PUBLISH; point [SIP] Server at a SIP presence server", what)
	case sip.StatusBadRequest, sip.StatusUnsupportedMediaType, sip.StatusRequestEntityTooLarge:
		if dialog {
			return delivery.Permanent("%s: the server refused the dialog-info document", what)
		}
		return delivery.Permanent("%s: the server refused the PIDF document", what)
	case sip.StatusRequestTimeout, sip.StatusServiceUnavailable:
		// 503: the server is overloaded or down (RFC 3261 section 21.5.4); 408
		// from a proxy: the server behind it did not answer.
		return fmt.Errorf("%s (via %s, %s): %w", what, p.dest, p.conn.DestSetting(), delivery.ErrTargetDown)
	}
	return errors.New(what)
}

func (p *Publisher) fromName(uri string) string {
	if p.o.From != "" {
		return p.o.From
	}
	return uri
}

// isAuthFailure reports whether res refuses our credentials (or wants some).
func isAuthFailure(res *sip.Response) bool {
	return res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired
}

// digestCache keeps the last digest challenge of the server (401) and of the
// outbound proxy (407), so later PUBLISHes carry credentials at once instead of
// taking a challenge round trip each (RFC 3261 section 22.3 allows reusing a
// nonce with an incremented nonce count; a server that refuses it challenges
// again, stale, and is answered).
type digestCache struct {
	mu    sync.Mutex
	chals map[int]*cachedChallenge // by 401 / 407
}

type cachedChallenge struct {
	chal digest.Challenge
	nc   atomic.Uint32
}

func authHeaders(code int) (challenge, credentials string) {
	if code == sip.StatusProxyAuthRequired {
		return "Proxy-Authenticate", "Proxy-Authorization"
	}
	return "WWW-Authenticate", "Authorization"
}

// learn reads and keeps the challenge in res.
func (d *digestCache) learn(res *sip.Response) (*digest.Challenge, error) {
	name, _ := authHeaders(res.StatusCode)
	h := res.GetHeader(name)
	if h == nil {
		return nil, fmt.Errorf("%d %s without a %s header", res.StatusCode, res.Reason, name)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return nil, fmt.Errorf("%d %s: unreadable %s: %w", res.StatusCode, res.Reason, name, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	for i := range chal.QOP {
		chal.QOP[i] = strings.TrimSpace(chal.QOP[i])
	}
	if !digest.CanDigest(chal) || (len(chal.QOP) > 0 && !chal.SupportsQOP("auth")) {
		return nil, fmt.Errorf("%d %s: the server's digest challenge (algorithm %q, qop %q) is not supported; use MD5 or SHA-256 with qop auth or none",
			res.StatusCode, res.Reason, chal.Algorithm, strings.Join(chal.QOP, ","))
	}
	for _, f := range []struct{ name, v string }{{"realm", chal.Realm}, {"nonce", chal.Nonce}, {"opaque", chal.Opaque}} {
		if !echoable(f.v) {
			return nil, fmt.Errorf("%d %s: the %s of the server's digest challenge holds control characters or bytes that are not UTF-8, which the answer cannot carry back unchanged",
				res.StatusCode, res.Reason, f.name)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.chals == nil {
		d.chals = map[int]*cachedChallenge{}
	}
	d.chals[res.StatusCode] = &cachedChallenge{chal: *chal}
	return chal, nil
}

// echoable reports whether a digest parameter goes back in the answer as it
// came: the digest package writes quoted values with Go's escapes (strconv.Quote),
// which turn control characters and bytes that are not UTF-8 into \x.. or \u....
// text, and the server would read another value.
func echoable(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// answer sets req's credentials for the kept challenge of kind code.
func (d *digestCache) answer(req *sip.Request, code int, user, password string) error {
	d.mu.Lock()
	c := d.chals[code]
	d.mu.Unlock()
	if c == nil {
		return nil
	}
	if !echoable(user) {
		return errors.New("[SIP] Username holds control characters or bytes that are not UTF-8; a digest answer cannot carry it")
	}
	_, name := authHeaders(code)
	chal := c.chal
	cred, err := digest.Digest(&chal, digest.Options{Method: string(req.Method), URI: req.Recipient.String(),
		Username: user, Password: password, Count: int(c.nc.Add(1))})
	if err != nil {
		return fmt.Errorf("answer the digest challenge: %w", err)
	}
	req.RemoveHeader(name)
	req.AppendHeader(sip.NewHeader(name, cred.String()))
	return nil
}

// preempt adds credentials for every kept challenge.
func (d *digestCache) preempt(req *sip.Request, user, password string) {
	if user == "" {
		return
	}
	for _, code := range []int{sip.StatusProxyAuthRequired, sip.StatusUnauthorized} {
		_ = d.answer(req, code, user, password) // a failure here only costs a challenge
	}
}
