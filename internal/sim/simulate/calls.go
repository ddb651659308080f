package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/simulate/simconfig"
	"github.com/presencebridge/presencebridge/internal/sim/sipua"
)

// What `simulate --kamailio-pbx` adds to the PBX side: phones (package sipua)
// of the simulated users that register with the Kamailio PBX and call each
// other through it, scripted by --call or placed by POST /_sim/call, and a
// CALL line per step; and a TEAMS line for each setPresence and clearPresence
// the tenant answers (what a presencebridge watching the PBX wrote), with what
// Teams shows then and how long after the call's answer or hang-up it came.

// ringFor is how long a called phone rings before it answers, so a watcher
// of the PBX sees the call "early" before "confirmed".
const ringFor = time.Second

// maxCallDuration bounds a call's duration (--call, POST /_sim/call).
const maxCallDuration = 24 * time.Hour

// CallPath is the PBX side's HTTP endpoint that places a call (--pbx address).
const CallPath = "/_sim/call"

// scriptedCall is one --call FROM:TO:AFTER:DURATION.
type scriptedCall struct {
	from, to        string
	after, duration time.Duration
}

// parseCall reads FROM:TO:AFTER:DURATION, e.g. user00001:user00002:20s:8s.
// Its errors follow the flag package's "invalid value ... for flag -call: ".
func parseCall(v string) (scriptedCall, error) {
	parts := strings.Split(v, ":")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" {
		return scriptedCall{}, errors.New("want FROM:TO:AFTER:DURATION, e.g. user00001:user00002:20s:8s")
	}
	c := scriptedCall{from: parts[0], to: parts[1]}
	var err error
	if c.after, err = time.ParseDuration(parts[2]); err != nil || c.after < 0 {
		return scriptedCall{}, fmt.Errorf("AFTER %q: want a duration of 0 or more, e.g. 20s", parts[2])
	}
	if c.duration, err = time.ParseDuration(parts[3]); err != nil || c.duration <= 0 || c.duration > maxCallDuration {
		return scriptedCall{}, fmt.Errorf("DURATION %q: want a duration above 0 and at most 24h, e.g. 8s", parts[3])
	}
	return c, nil
}

// callUser is one simulated user as a party to calls.
type callUser struct {
	upn, uri string
	ext      string
}

// callTimes are a user's last call events, for the latency of what follows.
type callTimes struct {
	ringing, answered, ended time.Time
	active                   int    // calls answered and not hung up
	before                   string // what Teams showed when the last call began
}

// setMark is an accepted setPresence that changed what Teams shows.
type setMark struct {
	at  time.Time
	app string
}

// The call events of callEvent.
const (
	callRinging = iota
	callAnswered
	callEnded
)

// errUnknownUser is a call party that is not a simulated user; errSameUser a
// call to oneself.
var (
	errUnknownUser = errors.New("not a simulated user")
	errSameUser    = errors.New("a phone cannot call itself")
)

// lookupUser finds a simulated user by UPN or by its part before the "@"
// (user00001), case-insensitively.
func (p *pbxSide) lookupUser(name string) (callUser, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	i, ok := p.userIndex[key]
	if !ok {
		return callUser{}, fmt.Errorf("%q: %w (use a UPN or its name before the @, e.g. %s)", name, errUnknownUser, p.exampleUser())
	}
	return callUser{upn: p.users[i].UPN, uri: simconfig.SIPURI(i), ext: fmt.Sprint(1000 + i)}, nil
}

func (p *pbxSide) exampleUser() string {
	if len(p.users) == 0 {
		return "user00001"
	}
	return p.users[0].UPN
}

// indexUsers maps each user's lower-case UPN and name before the "@" (the
// first user's, where two share it) to its index in us.
func indexUsers(us []graphsim.User) map[string]int {
	index := make(map[string]int, 2*len(us))
	for i, u := range us {
		upn := strings.ToLower(u.UPN)
		index[upn] = i
		if at := strings.IndexByte(upn, '@'); at > 0 {
			if _, taken := index[upn[:at]]; !taken {
				index[upn[:at]] = i
			}
		}
	}
	return index
}

// startCalls makes the PBX side place calls on the running Kamailio PBX and
// print what the tenant is told about them.
func (p *pbxSide) startCalls() {
	p.users = p.sim.Users()
	p.userIndex = indexUsers(p.users)
	p.phones = map[string]*sipua.Phone{}
	p.callTimes = map[string]*callTimes{}
	p.lastSet = map[string]setMark{}
	p.closing = make(chan struct{})
	p.callsOn = true
	p.background(p.followWrites)
}

// background runs f in a goroutine close waits for, unless close has begun.
func (p *pbxSide) background(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		f()
	}()
	return true
}

// stopCalls ends the scripted calls still to come, hangs up the calls in
// progress and closes the phones.
func (p *pbxSide) stopCalls() {
	p.mu.Lock()
	p.stopping = true
	close(p.closing)
	p.mu.Unlock()
	p.bg.Wait()
	p.phoneMu.Lock()
	defer p.phoneMu.Unlock()
	for _, ph := range p.phones {
		ph.Close()
	}
}

// script places each scripted call its after after now.
func (p *pbxSide) script(calls []scriptedCall) {
	for _, c := range calls {
		p.background(func() {
			t := time.NewTimer(c.after)
			defer t.Stop()
			select {
			case <-t.C:
			case <-p.closing:
				return
			}
			if _, err := p.call(c.from, c.to, c.duration); err != nil {
				p.print("CALL  %s -> %s failed: %v", c.from, c.to, err)
			}
		})
	}
}

// phone returns u's phone, registered with the PBX (made on first use).
func (p *pbxSide) phone(ctx context.Context, u callUser) (*sipua.Phone, error) {
	p.phoneMu.Lock()
	defer p.phoneMu.Unlock()
	if ph := p.phones[u.upn]; ph != nil {
		return ph, nil
	}
	select {
	case <-p.closing:
		return nil, errors.New("simulate is stopping")
	default:
	}
	ph, err := sipua.New(ctx, sipua.Options{Server: p.kam.UDP, User: u.ext, Domain: p.kam.Domain, AnswerAfter: ringFor})
	if err != nil {
		return nil, err
	}
	if err := ph.Register(ctx); err != nil {
		ph.Close()
		return nil, err
	}
	p.phones[u.upn] = ph
	return ph, nil
}

// callInfo is POST /_sim/call's answer.
type callInfo struct {
	From     string    `json:"from"`
	FromURI  string    `json:"fromUri"`
	To       string    `json:"to"`
	ToURI    string    `json:"toUri"`
	CallID   string    `json:"callId"`
	Answered time.Time `json:"answered"`
	HangupAt time.Time `json:"hangupAt"`
}

// call has from's phone call to's through the PBX, returns once to's phone
// answered, and hangs up after duration (or when simulate stops).
func (p *pbxSide) call(fromName, toName string, duration time.Duration) (callInfo, error) {
	from, err := p.lookupUser(fromName)
	if err != nil {
		return callInfo{}, err
	}
	to, err := p.lookupUser(toName)
	if err != nil {
		return callInfo{}, err
	}
	if from.upn == to.upn {
		return callInfo{}, fmt.Errorf("%s to %s: %w", from.upn, to.upn, errSameUser)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caller, err := p.phone(ctx, from)
	if err != nil {
		return callInfo{}, err
	}
	if _, err := p.phone(ctx, to); err != nil {
		return callInfo{}, err
	}
	p.print("CALL  %s -> %s calling (%s -> %s; Teams shows %s and %s)", from.upn, to.upn, from.uri, to.uri, p.shows(from.upn), p.shows(to.upn))
	p.callEvent(time.Now(), callRinging, from.upn, to.upn)
	c, err := caller.Call(ctx, to.uri)
	if err != nil {
		p.callEvent(time.Now(), callEnded, from.upn, to.upn)
		return callInfo{}, err
	}
	answered := time.Now()
	p.callEvent(answered, callAnswered, from.upn, to.upn)
	p.print("CALL  %s -> %s answered; hangs up in %s", from.upn, to.upn, duration)
	hangup := func() {
		t := time.NewTimer(duration)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.closing:
		case <-c.Done():
		}
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		// The hang-up is when the BYE leaves: the PBX may tell its watchers
		// before the BYE's answer comes back.
		now := time.Now()
		p.callEvent(now, callEnded, from.upn, to.upn)
		if err := c.Hangup(hctx); err != nil {
			p.print("CALL  %s -> %s hang-up failed after %.1f s: %v", from.upn, to.upn, now.Sub(answered).Seconds(), err)
			return
		}
		p.print("CALL  %s -> %s hung up after %.1f s", from.upn, to.upn, now.Sub(answered).Seconds())
	}
	if !p.background(hangup) {
		hangup() // simulate is stopping: at once
	}
	return callInfo{From: from.upn, FromURI: from.uri, To: to.upn, ToURI: to.uri, CallID: c.CallID(),
		Answered: answered.UTC(), HangupAt: answered.Add(duration).UTC()}, nil
}

// callEvent records a call's event (callRinging, callAnswered, callEnded)
// for its parties.
func (p *pbxSide) callEvent(at time.Time, event int, upns ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, upn := range upns {
		ct := p.callTimes[upn]
		if ct == nil {
			ct = &callTimes{}
			p.callTimes[upn] = ct
		}
		switch event {
		case callRinging:
			ct.ringing = at
			if ct.active == 0 {
				ct.before = p.shows(upn)
			}
		case callAnswered:
			ct.answered = at
			ct.active++
		case callEnded:
			ct.ended = at
			ct.active = max(0, ct.active-1)
		}
	}
}

// lastCall is upn's latest call event at or before at: when, and what it was
// ("the call began ringing", "the call was answered", "the hang-up"); inCall
// says a call of upn is answered and not hung up.
func (p *pbxSide) lastCall(upn string, at time.Time) (when time.Time, what string, inCall bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ct := p.callTimes[upn]
	if ct == nil {
		return time.Time{}, "", false
	}
	for _, e := range []struct {
		t    time.Time
		what string
	}{{ct.ringing, "the call began ringing"}, {ct.answered, "the call was answered"}, {ct.ended, "the hang-up"}} {
		if !e.t.IsZero() && !e.t.After(at) && e.t.After(when) {
			when, what = e.t, e.what
		}
	}
	return when, what, ct.active > 0
}

// shownBefore is what Teams showed for upn when its last call began ("" when
// it had none).
func (p *pbxSide) shownBefore(upn string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ct := p.callTimes[upn]; ct != nil {
		return ct.before
	}
	return ""
}

// shows is what Teams shows for upn now, "Availability/Activity".
func (p *pbxSide) shows(upn string) string {
	a, act, _ := p.sim.Presence(upn)
	return a + "/" + act
}

// handleCall serves POST /_sim/call {"from","to","duration"}: it answers 200
// with the call (callInfo) once it is answered, 400 for a bad body or a call
// to oneself, 404 for an unknown user, 502 when the call failed (the PBX
// refused it, a phone could not register), 503 without a PBX.
func (p *pbxSide) handleCall(w http.ResponseWriter, r *http.Request) {
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	type problem struct {
		Error string `json:"error"`
	}
	if !p.callsOn {
		reply(http.StatusServiceUnavailable, problem{"calls need Kamailio as a small PBX: start simulate with --kamailio-pbx (needs the kamailio package)"})
		return
	}
	var req struct {
		From     string `json:"from"`
		To       string `json:"to"`
		Duration string `json:"duration"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.From == "" || req.To == "" {
		reply(http.StatusBadRequest, problem{`want {"from":"user00001","to":"user00002","duration":"8s"}` + errText(err)})
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil || d <= 0 || d > maxCallDuration {
		reply(http.StatusBadRequest, problem{fmt.Sprintf("duration %q: want a duration above 0 and at most 24h, e.g. \"8s\"", req.Duration)})
		return
	}
	info, err := p.call(req.From, req.To, d)
	switch {
	case errors.Is(err, errUnknownUser):
		reply(http.StatusNotFound, problem{err.Error()})
	case errors.Is(err, errSameUser):
		reply(http.StatusBadRequest, problem{err.Error()})
	case err != nil:
		p.print("CALL  %s -> %s failed: %v", req.From, req.To, err)
		reply(http.StatusBadGateway, problem{err.Error()})
	default:
		reply(http.StatusOK, info)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return ": " + err.Error()
}

// followWrites prints a TEAMS line for each setPresence and clearPresence the
// tenant answers, until simulate stops.
func (p *pbxSide) followWrites() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	seen := 0
	for {
		select {
		case <-p.closing:
			return
		case <-tick.C:
		}
		ws := p.sim.Writes() // the most recent 100,000; a demo never gets near
		if len(ws) < seen {
			seen = 0 // the statistics were reset
		}
		for _, w := range ws[seen:] {
			p.printWrite(w)
		}
		seen = len(ws)
	}
}

// printWrite prints one TEAMS line for w.
func (p *pbxSide) printWrite(w graphsim.WriteRecord) {
	who := w.UPN
	if who == "" {
		who = w.User
	}
	by := w.App
	if by == "" {
		by = "a caller without a valid token"
	}
	if !w.Accepted() {
		what := w.Op
		if w.Op == graphsim.OpSetPresence && w.Availability != "" {
			what += " " + w.Availability + "/" + w.Activity
		}
		p.print("TEAMS %-28s %s by %s refused: %d %s", who, what, by, w.Status, w.Error)
		return
	}
	// What Teams shows from the write on: the change it made, if any.
	shown := ""
	for _, c := range p.sim.Changes(w.At.Add(-time.Nanosecond)) {
		if c.UPN == w.UPN && c.At.Equal(w.At) {
			shown = c.Availability + "/" + c.Activity
		}
	}
	since := ""
	if when, what, _ := p.lastCall(w.UPN, w.At); !when.IsZero() {
		since = fmt.Sprintf("; %.2f s after %s", w.At.Sub(when).Seconds(), what)
	}
	set := w.Availability + "/" + w.Activity
	if w.Op == graphsim.OpSetPresence && shown != "" {
		p.mu.Lock()
		p.lastSet[w.UPN] = setMark{at: w.At, app: w.App}
		p.mu.Unlock()
	}
	switch {
	case w.Op == graphsim.OpClearPresence && shown != "":
		if before := p.shownBefore(w.UPN); before != "" && before != shown {
			since += "; the user's own state changed during the call, from " + before
		}
		p.print("TEAMS %-28s back to %s (clearPresence by %s%s)", who, shown, by, since)
	case w.Op == graphsim.OpClearPresence:
		p.print("TEAMS %-28s still %s (clearPresence by %s%s)", who, p.shows(w.UPN), by, since)
	case shown == set:
		p.print("TEAMS %-28s %s (setPresence by %s, for %s%s)", who, set, by, w.Expiration, since)
	case shown == "" && p.shows(w.UPN) == set:
		p.print("TEAMS %-28s %s renewed (setPresence by %s, for %s%s)", who, set, by, w.Expiration, since)
	case shown == "":
		p.print("TEAMS %-28s still %s: setPresence %s by %s is outranked (Graph's precedence rules%s)", who, p.shows(w.UPN), set, by, since)
	default:
		p.print("TEAMS %-28s %s: setPresence %s by %s, with Graph's precedence rules%s", who, shown, set, by, since)
	}
}
