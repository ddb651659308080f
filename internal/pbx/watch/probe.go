package watch

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	pbxsip "github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// ProbeNotifyWait is how long Probe waits, after the PBX accepted a fetch, for
// its NOTIFY (RFC 6665 section 4.4.3: the notifier sends one at once).
const ProbeNotifyWait = 2 * time.Second

// ProbeResult is what one fetch of one event package for one user found.
type ProbeResult struct {
	Event string // "dialog" or "presence"
	// Request names it: "SUBSCRIBE sip:1000@pbx.example (Event: dialog)".
	Request string
	// Err is set when no final answer came (the address, the transport, a
	// firewall); it wraps delivery.ErrTargetDown as the watch's errors do.
	Err error
	// Code and Reason are the PBX's final answer (after digest credentials).
	Code   int
	Reason string
	// Refusal explains a refusing answer with its fix, as the service logs it
	// (403, 404, 489, 401/407 after credentials, 405, 501); empty otherwise.
	Refusal string
	// Notified is set when the fetch's NOTIFY came within ProbeNotifyWait; State
	// is what its body says (zero when it says nothing, e.g. no publication),
	// and BodyErr why a body could not be read.
	Notified bool
	State    presence.PBXState
	BodyErr  error
	// Short is set where the PBX refused the fetch (Asterisk answers 400 to
	// Expires: 0): a subscription of a minute was made instead, and ended after
	// its first NOTIFY.
	Short bool
	// Contact is where the NOTIFY was to come (the SUBSCRIBE's Contact:
	// [PBX] Listen, or a free port on the address toward the PBX).
	Contact string
}

// Accepted reports whether the PBX accepted the fetch (a 2xx).
func (r ProbeResult) Accepted() bool { return r.Err == nil && r.Code >= 200 && r.Code < 300 }

// Probe fetches the PBX's state of u once for each event package of s.Watch:
// a SUBSCRIBE with Expires: 0, which the PBX answers and follows with one
// NOTIFY, leaving no subscription behind (RFC 6665 section 4.4.3). A PBX that
// refuses the fetch with 400 or 423 (Asterisk 22 answers 400 Bad Request to
// Expires: 0) gets a subscription of a minute instead, ended (Expires: 0 in its
// dialog) after its first NOTIFY. It goes
// through the service's own path: a connection on s.Listen with sipS's server,
// transport, outbound proxy and digest credentials, the watch's SUBSCRIBE, its
// NOTIFY body reading and its explanation of a refusal. It waits up to
// sipS.Timeout for each answer and ProbeNotifyWait for each NOTIFY. An error
// means the probe could not be made at all (no event to watch, a SIP URI that
// cannot be read, [PBX] Listen cannot be bound, TLS).
func Probe(ctx context.Context, s Settings, sipS pbxsip.Settings, u users.User) ([]ProbeResult, error) {
	events := s.Events()
	if len(events) == 0 {
		return nil, fmt.Errorf("[PBX] Watch = %q watches nothing; set it to dialog, presence or both", s.Watch)
	}
	target, err := s.Target(u)
	if err != nil {
		return nil, err
	}
	var uri sip.Uri
	if err := sip.ParseUri(target, &uri); err != nil {
		return nil, fmt.Errorf("the SIP URI %q watched for %s cannot be read: %w", target, u.UPN, err)
	}
	// A Watcher that is never Run: its transact builds and sends the SUBSCRIBE,
	// and byCallID finds the subscription a NOTIFY belongs to.
	w := &Watcher{o: Options{Settings: s, SIP: sipS}, log: slog.New(slog.DiscardHandler), byCallID: map[string]*subscription{}}
	wu := &watched{user: u, uri: uri, state: presence.PBXState{UPN: u.UPN}}
	for _, ev := range events {
		wu.subs = append(wu.subs, &subscription{w: wu, event: ev, phase: phaseNew})
	}
	p := &prober{w: w, got: map[*subscription]chan notified{}}
	for _, sub := range wu.subs {
		p.got[sub] = make(chan notified, 1)
	}
	listen := s.Listen
	if listen == "" {
		listen = ":0"
	}
	conn, err := pbxsip.NewConn(sipS, pbxsip.ConnOptions{Listen: listen, OnRequest: p.serve, Rate: s.Rate})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w.conn = conn

	out := make([]ProbeResult, 0, len(wu.subs))
	for _, sub := range wu.subs {
		out = append(out, p.fetch(ctx, sub))
	}
	return out, nil
}

// probeExpires is the lifetime asked for where the PBX takes no fetch (a PBX
// that wants longer answers 423 with Min-Expires, which Transact obeys); the
// subscription is ended after its first NOTIFY, and lapses by itself if that
// fails.
const probeExpires = time.Minute

// fetch makes one fetch and waits for its NOTIFY.
func (p *prober) fetch(ctx context.Context, sub *subscription) ProbeResult {
	w := p.w
	r := ProbeResult{Event: sub.event, Request: fmt.Sprintf("SUBSCRIBE %s (Event: %s)", sub.w.uri.String(), sub.event),
		Contact: w.conn.Contact.String()}
	res, err := w.transact(ctx, sub, 0)
	if err == nil && (res.StatusCode == sip.StatusBadRequest || res.StatusCode == sip.StatusIntervalToBrief) {
		// Asterisk (res_pjsip_pubsub) answers 400 to an initial SUBSCRIBE with
		// Expires: 0 instead of serving the fetch: a short subscription, in the
		// same Call-ID, does what the fetch would have.
		r.Short = true
		res, err = w.transact(ctx, sub, probeExpires)
	}
	if err != nil {
		r.Err = err
		return r
	}
	r.Code, r.Reason = res.StatusCode, res.Reason
	if !res.IsSuccess() {
		if refused(res.StatusCode) {
			r.Refusal = refusal(res, sub, w.o.SIP.Username)
		}
		return r
	}
	wait := time.NewTimer(ProbeNotifyWait)
	select {
	case n := <-p.got[sub]:
		r.Notified, r.State, r.BodyErr = true, n.state, n.err
	case <-wait.C:
	case <-ctx.Done():
	}
	wait.Stop()
	if r.Short {
		// End the subscription in its dialog (best effort: it lapses anyway).
		w.mu.Lock()
		if to := res.To(); to != nil {
			sub.toTag, _ = to.Params.Get("tag")
		}
		if c := res.Contact(); c != nil {
			u := c.Address
			sub.remote = &u
		}
		w.mu.Unlock()
		_, _ = w.transact(ctx, sub, 0)
	}
	return r
}

// refused reports whether code is one the watch reports as a refusal (see
// Watcher.settleLocked).
func refused(code int) bool {
	switch code {
	case sip.StatusForbidden, sip.StatusNotFound, 489, sip.StatusMethodNotAllowed, sip.StatusNotImplemented,
		sip.StatusUnauthorized, sip.StatusProxyAuthRequired:
		return true
	}
	return false
}

// prober answers the PBX's requests to a Probe: the fetches' NOTIFYs are read
// and handed to the waiting fetch, the rest answered as the Watcher does.
type prober struct {
	w    *Watcher
	mu   sync.Mutex
	got  map[*subscription]chan notified
	seen map[*subscription]bool
}

type notified struct {
	state presence.PBXState
	err   error
}

func (p *prober) serve(req *sip.Request, tx sip.ServerTransaction) {
	if req.Method != sip.NOTIFY {
		p.w.serve(req, tx)
		return
	}
	callID := ""
	if c := req.CallID(); c != nil {
		callID = c.Value()
	}
	p.w.mu.Lock()
	sub := p.w.byCallID[callID]
	p.w.mu.Unlock()
	if sub == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusCallTransactionDoesNotExists, "Subscription Does Not Exist", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	// The fetch's NOTIFY says terminated, with the state in its body (RFC 6665
	// section 4.4.3); the Watcher ends a subscription there, a probe reads it.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[sub] {
		return // a retransmission, or a second NOTIFY: the first one counts
	}
	if p.seen == nil {
		p.seen = map[*subscription]bool{}
	}
	p.seen[sub] = true
	st, _, err := sub.read(req.Body())
	st.UPN = sub.w.user.UPN
	p.got[sub] <- notified{state: st, err: err}
}
