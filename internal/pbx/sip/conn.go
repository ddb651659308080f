package sip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"golang.org/x/time/rate"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/svclog"
	"github.com/presencebridge/presencebridge/internal/platform/transport"
)

// Conn is one SIP user agent speaking to [SIP]'s server: the route (Server, or
// OutboundProxy with a preloaded Route), TLS, the digest challenges kept per
// kind, and the transaction loop that answers 401, 407 and 423. The publisher
// and the PBX watch each have one.
type Conn struct {
	o      Settings
	ua     *sipgo.UserAgent
	client *sipgo.Client
	server *sipgo.Server // requests to us; nil without ConnOptions.Listen
	// Dest is where every request goes: [SIP] OutboundProxy, else Server.
	Dest  string
	route string
	lim   *rate.Limiter
	auth  digestCache
	// Contact is the address requests to us reach ("" without Listen).
	Contact sip.Uri
	cancel  context.CancelFunc
}

// ConnOptions are what a Conn's user is.
type ConnOptions struct {
	// Listen, when set, is the host:port (port 0: any free one) where requests
	// to us are served by OnRequest; requests we send leave from it, so a NAT
	// or firewall sees one address. Empty: requests to us are refused (405).
	Listen    string
	OnRequest func(req *sip.Request, tx sip.ServerTransaction)
	// Rate is requests per second at most (every try counts); 0 takes
	// Settings.Rate.
	Rate   float64
	Logger *slog.Logger
}

// NewConn starts a user agent for s.
func NewConn(s Settings, o ConnOptions) (*Conn, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rate <= 0 {
		o.Rate = s.Rate
	}
	c := &Conn{o: s, Dest: s.Server, lim: rate.NewLimiter(rate.Limit(o.Rate), max(1, int(o.Rate/10)))}
	if s.OutboundProxy != "" {
		c.Dest = s.OutboundProxy
		c.route = "<sip:" + s.OutboundProxy + ";lr"
		if s.Transport != "udp" {
			c.route += ";transport=" + s.Transport
		}
		c.route += ">"
	}
	// sipgo logs through the loggers given here; its warnings are about its own
	// connection bookkeeping, so only errors reach ours.
	quiet := slog.New(svclog.AtLeast(o.Logger.Handler(), slog.LevelError)).With("component", "sipgo")
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent("presencebridge"),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet),
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				o.Logger.Debug("Late or repeated SIP response ignored", "response", r.Short())
			})),
	}
	if s.Transport == "tls" {
		tc, err := tlsConfig(s)
		if err != nil {
			return nil, err
		}
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(tc))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("start SIP user agent: %w", err)
	}
	c.ua = ua
	clientOpts := []sipgo.ClientOption{sipgo.WithClientLogger(quiet)}
	ip := localIPToward(c.Dest)
	if ip != "" {
		clientOpts = append(clientOpts, sipgo.WithClientHostname(ip)) // Via names a reachable address, not 0.0.0.0
	}
	if o.Listen == "" {
		ua.TransactionLayer().OnRequest(func(req *sip.Request, tx *sip.ServerTx) {
			if !req.IsAck() {
				_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusMethodNotAllowed, "Method Not Allowed", nil))
			}
			tx.TerminateGracefully()
		})
	} else {
		addr, err := c.listen(o, ip, quiet)
		if err != nil {
			ua.Close()
			return nil, err
		}
		if s.Transport == "udp" {
			// Requests leave from the socket that takes the answers and the
			// requests to us (over TCP each request has its own connection).
			clientOpts = append(clientOpts, sipgo.WithClientConnectionAddr(addr))
		}
	}
	client, err := sipgo.NewClient(ua, clientOpts...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start SIP client: %w", err)
	}
	c.client = client
	return c, nil
}

// listen serves requests to us on o.Listen and returns the address bound.
func (c *Conn) listen(o ConnOptions, ip string, quiet *slog.Logger) (string, error) {
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return "", fmt.Errorf("SIP listen address %q: %w", o.Listen, err)
	}
	if host == "" {
		host = ip
	}
	if host == "" {
		host = "0.0.0.0"
	}
	network := c.o.Transport
	if network == "tls" {
		return "", errors.New("watching the PBX over tls is not supported yet; use [SIP] Transport = udp or tcp")
	}
	srv, err := sipgo.NewServer(c.ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		return "", fmt.Errorf("start SIP server: %w", err)
	}
	srv.OnNoRoute(o.OnRequest)
	ctx, cancel := context.WithCancel(context.Background())
	var bound string
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			cancel()
			return "", fmt.Errorf("listen for SIP requests on udp %s ([PBX] Listen): %w", net.JoinHostPort(host, port), err)
		}
		bound = pc.LocalAddr().String()
		go func() { _ = srv.ServeUDP(pc) }()
		// The client sends from this socket only once the transport knows it.
		for i := 0; i < 200; i++ {
			if conn, _ := c.ua.TransportLayer().GetConnection("udp", bound); conn != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	default:
		l, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			cancel()
			return "", fmt.Errorf("listen for SIP requests on tcp %s ([PBX] Listen): %w", net.JoinHostPort(host, port), err)
		}
		bound = l.Addr().String()
		go func() { _ = srv.ServeTCP(l) }()
	}
	go func() { <-ctx.Done(); srv.Close() }()
	c.server, c.cancel = srv, cancel
	h, p, _ := net.SplitHostPort(bound)
	pn, _ := strconv.Atoi(p)
	c.Contact = sip.Uri{Scheme: "sip", User: "presencebridge", Host: h, Port: pn}
	if network != "udp" {
		c.Contact.UriParams = sip.NewParams()
		c.Contact.UriParams.Add("transport", network)
	}
	return bound, nil
}

// Close stops the user agent (its connections, transactions and listener).
func (c *Conn) Close() error {
	if c.cancel != nil {
		c.cancel()
	}
	if c.client != nil {
		c.client.Close()
	}
	return c.ua.Close()
}

// Request is a request of method to target, sent over [SIP] Transport to Dest,
// with the preloaded Route of an outbound proxy.
func (c *Conn) Request(method sip.RequestMethod, target sip.Uri) *sip.Request {
	req := sip.NewRequest(method, target)
	req.SetTransport(strings.ToUpper(c.o.Transport))
	req.SetDestination(c.Dest)
	if c.route != "" {
		req.AppendHeader(sip.NewHeader("Route", c.route))
	}
	return req
}

// Transact sends req and follows it up to its final answer: digest
// credentials for a 401 or 407 (an outbound proxy and the server behind it may
// each ask), and, where longer is set, a longer Expires after 423 Interval Too
// Brief (RFC 3903 section 6, RFC 6665 section 4.1.2.1). Each follow-up keeps the
// Call-ID and takes the next CSeq (RFC 3261 section 22.2; a dialog's user reads
// the CSeq back from req). It returns the final response, or an error wrapping
// delivery.ErrTargetDown when no answer came.
func (c *Conn) Transact(ctx context.Context, req *sip.Request, longer bool) (*sip.Response, error) {
	c.auth.preempt(req, c.o.Username, c.o.Password.Reveal())
	answered := map[int]bool{} // challenges answered in this exchange, by status
	for tries := 0; ; tries++ {
		if err := c.lim.Wait(ctx); err != nil {
			return nil, err
		}
		var opts []sipgo.ClientRequestOption
		if tries > 0 {
			req.CSeq().SeqNo++
			req.RemoveHeader("Via")
			opts = append(opts, sipgo.ClientRequestAddVia)
		}
		res, err := c.Do(ctx, req, opts...)
		if err != nil {
			return nil, err
		}
		if tries == 4 {
			return res, nil // a server that keeps asking gets its last answer reported
		}
		switch code := res.StatusCode; {
		case code == sip.StatusIntervalToBrief && longer:
			s, ok := minExpires(res)
			if !ok {
				return res, nil
			}
			longer = false
			req.ReplaceHeader(sip.NewHeader("Expires", strconv.Itoa(s)))
		case code == sip.StatusUnauthorized || code == sip.StatusProxyAuthRequired:
			if c.o.Username == "" {
				return res, nil
			}
			chal, err := c.auth.learn(res)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
			}
			// The same kind of challenge after our answer means the credentials
			// are wrong, unless the server only says our nonce went stale.
			if answered[code] && !chal.Stale {
				return res, nil
			}
			answered[code] = true
			if err := c.auth.answer(req, code, c.o.Username, c.o.Password.Reveal()); err != nil {
				return nil, fmt.Errorf("%s %s: %w", req.Method, req.Recipient.String(), err)
			}
		default:
			return res, nil
		}
	}
}

// Do runs one client transaction, bounded by [SIP] Timeout only: a transaction
// under way when ctx ends (a shutdown) still takes its answer, so the entity tag
// of a publication the server made is not lost. Otherwise the next start would
// publish afresh and leave the server a second, stale publication until it
// expires (RFC 3903 has no way to find it again).
func (c *Conn) Do(ctx context.Context, req *sip.Request, opts ...sipgo.ClientRequestOption) (*sip.Response, error) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.o.Timeout)
	defer cancel()
	res, err := c.client.Do(tctx, req, opts...)
	if err != nil {
		return nil, c.unreachable(req.Method, err)
	}
	return res, nil
}

// unreachable explains a request that got no answer.
func (c *Conn) unreachable(method sip.RequestMethod, err error) error {
	// sipgo's own prefix says nothing a field engineer can use.
	cause := strings.TrimPrefix(err.Error(), "client transcation failed to request connection: ")
	if errors.Is(err, context.DeadlineExceeded) {
		cause = fmt.Sprintf("no answer within %s ([SIP] Timeout)", c.o.Timeout)
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		badName   x509.HostnameError
		badCert   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &badName) || errors.As(err, &badCert) || errors.As(err, &verify) {
		cause += "; check [SIP] CAFile (the CA that signed the server's certificate) and [SIP] ServerName"
	}
	return fmt.Errorf("%s over %s to %s (%s): %s: %w", method, c.o.Transport, c.Dest, c.DestSetting(), cause, delivery.ErrTargetDown)
}

// DestSetting names the key Dest comes from.
func (c *Conn) DestSetting() string {
	if c.o.OutboundProxy != "" {
		return "[SIP] OutboundProxy"
	}
	return "[SIP] Server"
}

// localIPToward is the local address the system would use to reach dest (no
// packet is sent).
func localIPToward(dest string) string {
	c, err := net.Dial("udp", dest)
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// tlsConfig trusts the system roots plus [SIP] CAFile and always verifies.
func tlsConfig(o Settings) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if tc.ServerName == "" {
		host := o.Server
		if o.OutboundProxy != "" {
			host = o.OutboundProxy
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		tc.ServerName = host
	}
	if o.CAFile != "" {
		pool, err := transport.CAPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("[SIP] CAFile: %w", err)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
