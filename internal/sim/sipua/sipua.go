// Package sipua is a minimal SIP phone for presencebridge's tests, demo and
// benchmark: it registers with a registrar (such as the PBX-mode Kamailio of
// package kamailio), calls another phone through it (INVITE with an SDP
// offer, 200, ACK, BYE; no media flows) and answers calls made to it by itself.
// It is built on sipgo's dialog helpers and speaks UDP on loopback only. It
// imports nothing of testing, so the presencebridge binary can link it.
package sipua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/presencebridge/presencebridge/internal/platform/svclog"
)

// Options configure one phone.
type Options struct {
	// Server is the PBX's UDP host:port. REGISTER and new calls go there
	// whatever the URI's host; requests inside a call follow its route set.
	Server string
	// User and Domain make the phone's address of record, sip:User@Domain.
	User, Domain string
	// Password answers a 401 or 407 digest challenge to REGISTER or INVITE
	// (user name User); empty sends no credentials and fails when challenged.
	Password string
	// AnswerAfter is how long an incoming call rings (100 Trying and 180
	// Ringing at once, 200 OK after this), so a watcher can see it "early".
	// 0 answers at once.
	AnswerAfter time.Duration
	// Expires is the registration lifetime asked for (default 1 h); Register
	// does not refresh it by itself: call it again before then.
	Expires time.Duration
	// Logger gets a line per call set up or ended; sipgo's own messages only
	// from level error. nil discards.
	Logger *slog.Logger
}

// Phone is one SIP user agent listening on a free loopback UDP port. Its
// methods may be called from several goroutines. Close it when done.
type Phone struct {
	opts   Options
	aor    sip.Uri
	route  sip.Uri // <sip:Server;lr>, the outbound proxy of calls
	conn   net.PacketConn
	ua     *sipgo.UserAgent
	client *sipgo.Client
	dialog *sipgo.DialogUA
	log    *slog.Logger

	incoming chan *Call
	closing  chan struct{}
	closed   sync.Once
	serving  sync.WaitGroup // the UDP reader and the INVITE handlers

	mu         sync.Mutex
	isClosing  bool             // closing is closed
	calls      map[string]*Call // by sipgo dialog ID
	regCallID  string
	regCSeq    uint32
	registered bool
}

// incomingQueue is how many answered calls Incoming holds for a reader;
// further ones are still answered, just not queued.
const incomingQueue = 64

// New opens the phone's socket on 127.0.0.1 and starts answering requests. It
// does not register: call Register.
func New(ctx context.Context, o Options) (*Phone, error) {
	if o.Server == "" {
		return nil, errors.New("sipua.New: Options.Server is required (the PBX's UDP host:port)")
	}
	var route sip.Uri
	if _, _, err := net.SplitHostPort(o.Server); err != nil {
		return nil, fmt.Errorf("sipua.New: Server %q must be host:port: %w", o.Server, err)
	}
	if err := sip.ParseUri("sip:"+o.Server+";lr", &route); err != nil {
		return nil, fmt.Errorf("sipua.New: Server %q must be host:port: %w", o.Server, err)
	}
	if o.User == "" || o.Domain == "" || strings.ContainsAny(o.User+o.Domain, "@:;<> \r\n") {
		return nil, fmt.Errorf("sipua.New: User %q and Domain %q must make a SIP address user@domain", o.User, o.Domain)
	}
	if o.AnswerAfter < 0 {
		return nil, fmt.Errorf("sipua.New: AnswerAfter %s is negative", o.AnswerAfter)
	}
	if o.Expires <= 0 {
		o.Expires = time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	conn, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sipua %s@%s: listen: %w", o.User, o.Domain, err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	log := o.Logger.With("phone", "sip:"+o.User+"@"+o.Domain)
	quiet := slog.New(svclog.AtLeast(log.Handler(), slog.LevelError)).With("component", "sipgo")
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(o.User),
		sipgo.WithUserAgentHostname(o.Domain),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet),
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				log.Debug("Late or repeated SIP response ignored", "response", r.Short())
			})),
	)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sipua %s@%s: user agent: %w", o.User, o.Domain, err)
	}
	local := conn.LocalAddr().String()
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(quiet), sipgo.WithClientHostname("127.0.0.1"),
		sipgo.WithClientPort(port), sipgo.WithClientConnectionAddr(local))
	if err != nil {
		ua.Close()
		conn.Close()
		return nil, fmt.Errorf("sipua %s@%s: client: %w", o.User, o.Domain, err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		ua.Close()
		conn.Close()
		return nil, fmt.Errorf("sipua %s@%s: server: %w", o.User, o.Domain, err)
	}
	p := &Phone{
		opts: o, aor: sip.Uri{Scheme: "sip", User: o.User, Host: o.Domain}, route: route,
		conn: conn, ua: ua, client: client, log: log,
		incoming: make(chan *Call, incomingQueue), closing: make(chan struct{}),
		calls: make(map[string]*Call), regCallID: sip.GenerateTagN(24) + "@" + local,
	}
	p.dialog = &sipgo.DialogUA{Client: client, ContactHDR: sip.ContactHeader{
		Address: sip.Uri{Scheme: "sip", User: o.User, Host: "127.0.0.1", Port: port}}}
	srv.OnInvite(p.onInvite)
	srv.OnAck(p.onAck)
	srv.OnBye(p.onBye)
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	})
	p.serving.Add(1)
	go func() {
		defer p.serving.Done()
		_ = srv.ServeUDP(conn) // until Close closes conn
	}()
	// ServeUDP puts the socket into the connection pool that requests are sent
	// from; wait for that, or the first REGISTER would open another socket.
	for {
		if _, err := ua.TransportLayer().GetConnection("udp", local); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			p.Close()
			return nil, fmt.Errorf("sipua %s@%s: %w", o.User, o.Domain, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return p, nil
}

// URI is the phone's address of record, sip:User@Domain.
func (p *Phone) URI() string { return p.aor.String() }

// Addr is the loopback UDP host:port the phone listens and sends on (its Contact).
func (p *Phone) Addr() string { return p.conn.LocalAddr().String() }

// Register binds the phone's contact to its address of record at the server
// for Options.Expires, answering a digest challenge with Options.Password.
func (p *Phone) Register(ctx context.Context) error {
	return p.register(ctx, p.opts.Expires)
}

// Unregister removes the phone's binding (REGISTER with Expires: 0).
func (p *Phone) Unregister(ctx context.Context) error {
	return p.register(ctx, 0)
}

func (p *Phone) register(ctx context.Context, expires time.Duration) error {
	p.mu.Lock()
	p.regCSeq++
	seq := p.regCSeq
	p.mu.Unlock()
	secs := int(expires / time.Second)
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: p.opts.Domain})
	from := sip.FromHeader{Address: p.aor}
	from.Params.Add("tag", sip.GenerateTagN(16))
	to := sip.ToHeader{Address: p.aor}
	callID := sip.CallIDHeader(p.regCallID)
	exp := sip.ExpiresHeader(secs)
	req.AppendHeader(&from)
	req.AppendHeader(&to)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: sip.REGISTER})
	req.AppendHeader(sip.HeaderClone(&p.dialog.ContactHDR))
	req.AppendHeader(&exp)
	req.SetDestination(p.opts.Server)
	what := "REGISTER " + p.URI() + " at " + p.opts.Server
	res, err := p.client.Do(ctx, req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if (res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired) && p.opts.Password != "" {
		res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.opts.User, Password: p.opts.Password})
		if err != nil {
			return fmt.Errorf("%s with credentials of %s: %w", what, p.opts.User, err)
		}
		p.mu.Lock()
		p.regCSeq = max(p.regCSeq, req.CSeq().SeqNo)
		p.mu.Unlock()
	}
	if !res.IsSuccess() {
		hint := ""
		switch {
		case res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired:
			if p.opts.Password == "" {
				hint = " (the server wants credentials: set Options.Password)"
			} else {
				hint = " (check the password of " + p.opts.User + ")"
			}
		}
		return fmt.Errorf("%s: %d %s%s", what, res.StatusCode, res.Reason, hint)
	}
	p.mu.Lock()
	p.registered = secs > 0
	p.mu.Unlock()
	return nil
}

// Call is one call in progress, made with Phone.Call or answered by the phone.
type Call struct {
	phone    *Phone
	id       string // sipgo dialog ID
	callID   string
	remote   string
	incoming bool
	client   *sipgo.DialogClientSession // the caller's side
	server   *sipgo.DialogServerSession // the callee's side
	done     chan struct{}
	end      sync.Once
	up       bool // set up (answered and acknowledged); under phone.mu
}

// CallID is the call's SIP Call-ID (what dialog-info reports as call-id).
func (c *Call) CallID() string { return c.callID }

// Remote is the other party's URI as the INVITE named it (To for a call made,
// From for a call answered).
func (c *Call) Remote() string { return c.remote }

// Incoming reports whether the phone answered this call (rather than made it).
func (c *Call) Incoming() bool { return c.incoming }

// Done is closed when the call has ended: Hangup, the other side's BYE, or
// Close.
func (c *Call) Done() <-chan struct{} { return c.done }

// Hangup ends the call with a BYE and waits for its answer. A call already
// ended returns nil.
func (c *Call) Hangup(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	var err error
	if c.client != nil {
		err = c.client.Bye(ctx)
	} else {
		err = c.server.Bye(ctx)
	}
	c.finish("hung up")
	if err != nil {
		return fmt.Errorf("BYE %s (Call-ID %s): %w", c.remote, c.callID, err)
	}
	return nil
}

// finish marks the call ended and forgets it.
func (c *Call) finish(how string) {
	c.end.Do(func() {
		c.phone.mu.Lock()
		delete(c.phone.calls, c.id)
		c.phone.mu.Unlock()
		if c.client != nil {
			_ = c.client.Close()
		} else {
			_ = c.server.Close()
		}
		close(c.done)
		c.phone.log.Info("Call ended", "remote", c.remote, "call_id", c.callID, "how", how)
	})
}

// Call calls to (e.g. "sip:bob@pbx.example") through the server: INVITE with
// an SDP offer (answering a digest challenge with Options.Password), waits for
// the answer and sends ACK. It returns once the call is set up; when ctx ends
// first the INVITE is cancelled. A refusal (404 not registered, 486 busy, a
// 407 it cannot answer) is an error naming the status.
func (p *Phone) Call(ctx context.Context, to string) (*Call, error) {
	var uri sip.Uri
	if err := sip.ParseUri(to, &uri); err != nil || uri.User == "" || uri.Host == "" {
		return nil, fmt.Errorf("call %q: not a SIP URI like sip:bob@pbx.example", to)
	}
	select {
	case <-p.closing:
		return nil, fmt.Errorf("call %s: phone %s is closed", to, p.URI())
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("call %s from %s: %w", to, p.URI(), err)
	}
	req := sip.NewRequest(sip.INVITE, uri)
	from := sip.FromHeader{Address: p.aor}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(&from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: uri.Scheme, User: uri.User, Host: uri.Host}})
	req.AppendHeader(sip.HeaderClone(&p.dialog.ContactHDR))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	// The server as outbound proxy (a preloaded Route, RFC 3261 section
	// 8.1.2): the INVITE goes there, and so does a CANCEL (it copies Route).
	req.AppendHeader(&sip.RouteHeader{Address: *p.route.Clone()})
	req.SetBody(p.sdp())
	what := "call " + to + " from " + p.URI()
	s, err := p.dialog.WriteInvite(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: INVITE: %w", what, err)
	}
	err = s.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.opts.User, Password: p.opts.Password})
	if err != nil {
		_ = s.Close()
		var refused *sipgo.ErrDialogResponse
		if errors.As(err, &refused) {
			return nil, fmt.Errorf("%s: %d %s", what, refused.Res.StatusCode, refused.Res.Reason)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	c := &Call{phone: p, id: s.ID, callID: req.CallID().Value(), remote: uri.String(), client: s, done: make(chan struct{}), up: true}
	p.mu.Lock()
	p.calls[c.id] = c
	p.mu.Unlock()
	if err := s.Ack(ctx); err != nil {
		// The callee keeps resending its 200 and gives up on its own.
		c.finish("ACK failed")
		return nil, fmt.Errorf("%s: ACK: %w", what, err)
	}
	p.log.Info("Call set up", "remote", c.remote, "call_id", c.callID)
	return c, nil
}

// Incoming delivers the calls the phone answered, once their ACK arrived (up
// to 64 wait for a reader; later ones are answered all the same, not queued).
func (p *Phone) Incoming() <-chan *Call { return p.incoming }

// Calls is how many calls the phone has in progress: made, answered, or
// ringing on it.
func (p *Phone) Calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// sdp is a minimal audio offer or answer (RFC 4566). No media is sent: the
// port is the discard port.
func (p *Phone) sdp() []byte {
	id := strconv.FormatInt(time.Now().UnixNano(), 10)
	return []byte("v=0\r\n" +
		"o=" + p.opts.User + " " + id + " " + id + " IN IP4 127.0.0.1\r\n" +
		"s=presencebridge test phone\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio 9 RTP/AVP 0 8\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=sendrecv\r\n")
}

// onInvite answers a new call: 100, 180, then 200 with SDP after AnswerAfter
// (unless the caller cancels first), and waits for the ACK.
func (p *Phone) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params.Has("tag") {
		// A re-INVITE: keep the call as it is.
		if c := p.match(req); c != nil {
			_ = tx.Respond(sip.NewSDPResponseFromRequest(req, p.sdp()))
			return
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
		return
	}
	p.mu.Lock()
	if p.isClosing {
		p.mu.Unlock()
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil))
		return
	}
	p.serving.Add(1) // under mu, so Close's Wait never races it
	p.mu.Unlock()
	defer p.serving.Done()
	s, err := p.dialog.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Request", nil))
		p.log.Warn("INVITE refused", "error", err)
		return
	}
	remote := ""
	if f := req.From(); f != nil {
		remote = f.Address.String()
	}
	c := &Call{phone: p, id: s.ID, callID: req.CallID().Value(), remote: remote, incoming: true, server: s, done: make(chan struct{})}
	p.mu.Lock()
	p.calls[c.id] = c
	p.mu.Unlock()
	_ = s.Respond(sip.StatusTrying, "Trying", nil)
	if err := s.Respond(sip.StatusRinging, "Ringing", nil); err != nil {
		c.finish("ringing failed: " + err.Error())
		return
	}
	if p.opts.AnswerAfter > 0 {
		t := time.NewTimer(p.opts.AnswerAfter)
		select {
		case <-t.C:
		case <-s.Context().Done(): // CANCEL: the transaction layer answered 487
			t.Stop()
			c.finish("cancelled by the caller")
			return
		case <-p.closing:
			t.Stop()
			_ = s.Respond(sip.StatusTemporarilyUnavailable, "Temporarily Unavailable", nil)
			c.finish("phone closed while ringing")
			return
		}
	}
	if err := s.RespondSDP(p.sdp()); err != nil { // returns once the ACK arrived
		c.finish("not set up: " + err.Error())
		return
	}
	p.mu.Lock()
	c.up = true
	p.mu.Unlock()
	p.log.Info("Call answered", "remote", c.remote, "call_id", c.callID)
	select {
	case p.incoming <- c:
	default:
	}
}

// match finds the call an in-dialog request belongs to, whichever side made it.
func (p *Phone) match(req *sip.Request) *Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id, err := sip.DialogIDFromRequestUAS(req); err == nil {
		if c := p.calls[id]; c != nil && c.server != nil {
			return c
		}
	}
	if id, err := sip.DialogIDFromRequestUAC(req); err == nil {
		if c := p.calls[id]; c != nil && c.client != nil {
			return c
		}
	}
	return nil
}

func (p *Phone) onAck(req *sip.Request, tx sip.ServerTransaction) {
	if c := p.match(req); c != nil && c.server != nil {
		_ = c.server.ReadAck(req, tx)
	}
}

func (p *Phone) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := p.match(req)
	if c == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil))
		return
	}
	var err error
	if c.client != nil {
		err = c.client.ReadBye(req, tx)
	} else {
		err = c.server.ReadBye(req, tx)
	}
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusBadRequest, "Bad Request", nil))
	}
	c.finish("hung up by " + c.remote)
}

// Close hangs up the calls in progress and removes the registration (best
// effort, a second at most), then closes the socket. Safe to call more than once.
func (p *Phone) Close() error {
	p.closed.Do(func() {
		p.mu.Lock()
		p.isClosing = true
		close(p.closing)
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p.mu.Lock()
		calls := make([]*Call, 0, len(p.calls))
		for _, c := range p.calls {
			if c.up { // a ringing one gets 480 from onInvite
				calls = append(calls, c)
			}
		}
		registered := p.registered
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.Hangup(ctx)
			}()
		}
		if registered {
			_ = p.Unregister(ctx)
		}
		wg.Wait()
		_ = p.ua.Close()
		_ = p.conn.Close()
		p.serving.Wait()
	})
	return nil
}
