package transport

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// connectTimeout bounds a CONNECT handshake (all its rounds) when the
// caller's context allows longer: the proxy connects to the target before it
// answers 200. A variable for tests.
var connectTimeout = 30 * time.Second

// maxConnectRounds bounds the CONNECTs of one handshake: pre-emptive Basic,
// then NTLM's negotiate and authenticate messages, with room for one more.
const maxConnectRounds = 5

// maxChallengeBody is how much of a 407's body is read to keep the
// connection for the next round; a longer body costs a new connection.
const maxChallengeBody = 1 << 20

// connectDialer opens tunnels through the HTTP proxy of [Proxy] URL with
// CONNECT and answers its authentication challenges: Basic, NTLM and
// Negotiate (NTLM inside it with configured credentials; SSPI with the
// service account on Windows). NTLM and Negotiate authenticate a TCP
// connection, so the whole handshake (CONNECT, 407, CONNECT with the
// negotiate message, 407 with the challenge, CONNECT with the authenticate
// message, 200) happens on one connection, which net/http's own CONNECT
// cannot do. net/http does TLS and ALPN on the tunnel DialContext returns,
// as on a direct connection.
type connectDialer struct {
	hop       *hopDialer  // dials the proxy; tags failures with the proxy hop
	proxyAddr string      // canonical host:port of the proxy
	proxyHost string      // its host name, for the Negotiate target HTTP/<host>
	creds     *proxyCreds // nil: none configured
	setting   string      // where the proxy is configured
	logger    *slog.Logger

	mu       sync.Mutex
	accepted string // the scheme of the last tunnel ("none" without auth), "" before the first
}

// DialContext implements http.Transport.DialContext: addr is the target.
func (d *connectDialer) DialContext(ctx context.Context, _, addr string) (net.Conn, error) {
	h := &handshake{d: d, target: addr}
	defer h.close()
	conn, err := h.run(ctx)
	if err != nil {
		if ctx.Err() != nil && !isTimeout(ctx.Err()) {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return conn, nil
}

// handshake is one tunnel being opened.
type handshake struct {
	d      *connectDialer
	target string

	conn net.Conn
	br   *bufio.Reader
	stop func() bool // ends the context watch on conn

	sent         string      // scheme of the last Proxy-Authorization sent; "" none
	basicRefused bool        // Basic credentials were answered with 407
	session      authSession // the NTLM/Negotiate handshake in progress
	integrated   bool        // session uses the service account (SSPI)
	challenged   bool        // the proxy answered session with a challenge
	lastOffers   challenges  // Proxy-Authenticate of the last 407
}

func (h *handshake) run(ctx context.Context) (net.Conn, error) {
	d := h.d
	var authz string
	var err error
	switch prev := d.lastScheme(); {
	case prev == schemeNTLM || prev == schemeNegotiate:
		// The proxy took this scheme before: skip the round that asks for it.
		if authz, err = h.start(prev); err != nil {
			return nil, err
		}
	case d.creds != nil && (prev == "" || prev == schemeBasic):
		// Pre-emptive Basic, as net/http sends it, until the proxy says otherwise.
		authz, h.sent = basicAuthorization(d.creds), schemeBasic
	}
	for round := 1; ; round++ {
		if h.conn == nil {
			if err := h.dial(ctx); err != nil {
				return nil, err
			}
		}
		resp, err := h.roundTrip(authz)
		if err != nil {
			return nil, h.ioError(err)
		}
		if resp.StatusCode == http.StatusOK {
			return h.established(), nil
		}
		if resp.StatusCode != http.StatusProxyAuthRequired || round == maxConnectRounds {
			return nil, h.refusal(resp)
		}
		h.lastOffers = parseChallenges(resp.Header.Values("Proxy-Authenticate"))
		keep := drain(resp)
		if authz, err = h.answer(resp); err != nil {
			return nil, err
		}
		if !keep {
			if h.challenged {
				return nil, h.ioError(errors.New("the proxy closed the connection between its challenge and the answer; " +
					"NTLM and Negotiate need it kept open"))
			}
			h.closeConn() // a new connection for the next round
		}
	}
}

// answer returns the Proxy-Authorization for the next round after a 407, or
// the error that ends the handshake.
func (h *handshake) answer(resp *http.Response) (string, error) {
	if h.session != nil {
		ch, err := h.lastOffers.token(h.sent)
		if err != nil {
			return "", &authError{proxy: h.d.proxyAddr, scheme: h.sent, integrated: h.integrated,
				err: fmt.Errorf("the challenge is not base64: %v", err)}
		}
		if ch == nil {
			// No challenge: the proxy refused what was sent last.
			return "", h.refusal(resp)
		}
		h.challenged = true
		tok, err := h.session.Step(ch)
		if err != nil {
			return "", &authError{proxy: h.d.proxyAddr, scheme: h.sent, integrated: h.integrated, err: err}
		}
		return h.sent + " " + base64.StdEncoding.EncodeToString(tok), nil
	}
	if h.sent == schemeBasic {
		h.basicRefused = true
	}
	switch scheme := choose(h.lastOffers, h.d.creds != nil, h.basicRefused); scheme {
	case "":
		return "", h.refusal(resp)
	case schemeBasic:
		h.sent = schemeBasic
		return basicAuthorization(h.d.creds), nil
	default:
		return h.start(scheme)
	}
}

// start begins an NTLM or Negotiate handshake and returns its first
// Proxy-Authorization value.
func (h *handshake) start(scheme string) (string, error) {
	if h.session != nil {
		h.session.Close()
	}
	h.sent, h.challenged = scheme, false
	if h.d.creds != nil {
		h.session, h.integrated = &ntlmSession{user: h.d.creds.user, pass: h.d.creds.pass}, false
	} else {
		s, err := newIntegratedSession(scheme, h.d.proxyHost)
		if err != nil {
			return "", &authError{proxy: h.d.proxyAddr, scheme: scheme, integrated: true, err: err}
		}
		h.session, h.integrated = s, true
	}
	tok, err := h.session.Step(nil)
	if err != nil {
		return "", &authError{proxy: h.d.proxyAddr, scheme: scheme, integrated: h.integrated, err: err}
	}
	return scheme + " " + base64.StdEncoding.EncodeToString(tok), nil
}

func (h *handshake) dial(ctx context.Context) error {
	c, err := h.d.hop.DialContext(ctx, "tcp", h.d.proxyAddr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(connectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.SetDeadline(deadline)
	// A cancelled context ends a read or write in progress at once.
	h.stop = context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	h.conn, h.br = c, bufio.NewReader(c)
	return nil
}

// roundTrip sends one CONNECT and reads the reply's header.
func (h *handshake) roundTrip(authz string) (*http.Response, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: presencebridge\r\nProxy-Connection: Keep-Alive\r\n", h.target, h.target)
	if authz != "" {
		fmt.Fprintf(&b, "Proxy-Authorization: %s\r\n", authz)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(h.conn, b.String()); err != nil {
		return nil, err
	}
	return http.ReadResponse(h.br, &http.Request{Method: http.MethodConnect})
}

// drain reads a 407's body so the connection can carry the next CONNECT,
// and says whether it can.
func drain(resp *http.Response) bool {
	defer resp.Body.Close()
	if resp.Close || (resp.ContentLength < 0 && len(resp.TransferEncoding) == 0) {
		return false // the body ends when the proxy closes the connection
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxChallengeBody+1))
	return err == nil && n <= maxChallengeBody
}

// established hands the tunnel over; the handshake's deadline and context
// watch end here.
func (h *handshake) established() net.Conn {
	h.stop()
	h.conn.SetDeadline(time.Time{})
	conn := net.Conn(h.conn)
	if h.br.Buffered() > 0 {
		// Nothing should follow a 200 before the client speaks TLS; keep it anyway.
		conn = &bufferedConn{Conn: h.conn, r: io.MultiReader(io.LimitReader(h.br, int64(h.br.Buffered())), h.conn)}
	}
	scheme := h.sent
	if scheme == "" {
		scheme = "none"
	}
	h.d.learn(scheme, h)
	h.conn, h.stop = nil, nil
	return conn
}

func (h *handshake) closeConn() {
	if h.conn != nil {
		h.stop()
		h.conn.Close()
		h.conn, h.stop = nil, nil
	}
}

func (h *handshake) close() {
	h.closeConn()
	if h.session != nil {
		h.session.Close()
	}
}

// ioError wraps a failure of the connection to the proxy during the handshake.
func (h *handshake) ioError(err error) error {
	return &proxyIOError{proxy: h.d.proxyAddr, target: h.target, setting: h.d.setting, scheme: h.sent, midHandshake: h.challenged, err: err}
}

// refusal is the *connectError for a final non-200 reply.
func (h *handshake) refusal(resp *http.Response) error {
	ce := newConnectError(h.d.proxyAddr, h.target, h.d.setting, resp)
	ce.native = true
	ce.scheme = h.sent
	ce.handshake = h.challenged
	ce.integrated = h.integrated
	if h.d.creds != nil {
		ce.credSetting = h.d.creds.setting
	}
	switch {
	case h.integrated:
		ce.user, ce.sentCredentials = serviceAccount(), true
	case h.sent != "":
		ce.user, ce.sentCredentials = h.d.creds.user, true
	}
	return ce
}

func (d *connectDialer) lastScheme() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.accepted
}

// learn remembers the scheme of a tunnel the proxy accepted, so the next
// connection starts with it; a change is logged.
func (d *connectDialer) learn(scheme string, h *handshake) {
	d.mu.Lock()
	changed := d.accepted != scheme
	d.accepted = scheme
	d.mu.Unlock()
	if !changed {
		return
	}
	user := ""
	switch {
	case scheme == "none":
	case h.integrated:
		user = serviceAccount() + " (the service account)"
	case d.creds != nil:
		user = d.creds.user
	}
	d.logger.Info("Proxy tunnel open", "proxy", d.proxyAddr, "auth", scheme, "user", user)
}

// bufferedConn is a net.Conn whose first bytes were already read into r.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// proxyIOError is a failure of the connection to the HTTP proxy during the
// CONNECT handshake: closed, timed out, or not answered with HTTP.
type proxyIOError struct {
	proxy, target, setting string
	scheme                 string // the scheme of the handshake in progress, "" none
	midHandshake           bool   // an NTLM/Negotiate challenge had been answered
	err                    error
}

func (e *proxyIOError) Error() string {
	return fmt.Sprintf("proxy %s: CONNECT %s: %v", e.proxy, e.target, e.err)
}

func (e *proxyIOError) Unwrap() error { return e.err }

// Timeout keeps net.Error semantics for url.Error.Timeout.
func (e *proxyIOError) Timeout() bool {
	return netTimeout(e.err)
}
