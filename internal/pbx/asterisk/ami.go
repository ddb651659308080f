package asterisk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/backoff"
)

// amiBanner starts the line Asterisk's manager interface greets with
// ("Asterisk Call Manager/11.0.0").
const amiBanner = "Asterisk Call Manager/"

// amiClient sets Custom: device states over one manager session, made at the
// first need (or by keep) and made again when it broke.
type amiClient struct {
	o   Options
	log *slog.Logger

	dial sync.Mutex // one login at a time

	mu       sync.Mutex
	sess     *amiSession
	closed   bool
	attempts int   // logins tried
	loginErr error // the last login's failure
}

func newAMI(o Options) *amiClient {
	return &amiClient{o: o, log: o.Logger}
}

// amiMessage is one response: its keys in lower case.
type amiMessage map[string]string

// amiSession is one logged-in manager connection. Actions are written one
// after the other and may be in flight together; a reader hands each
// response to the action with its ActionID.
type amiSession struct {
	conn   net.Conn
	banner string
	wmu    sync.Mutex // writes

	mu      sync.Mutex
	pending map[string]chan amiMessage
	next    uint64
	lastUse time.Time
	done    chan struct{}
	err     error // why the session ended (set before done closes)
}

// session returns the live session, logging in first when there is none.
// Callers that waited while another logged in and failed get that failure
// rather than trying again one after the other, each for up to Timeout.
func (c *amiClient) session(ctx context.Context) (*amiSession, error) {
	if s := c.current(); s != nil {
		return s, nil
	}
	c.mu.Lock()
	tried := c.attempts
	c.mu.Unlock()
	c.dial.Lock()
	defer c.dial.Unlock()
	if s := c.current(); s != nil {
		return s, nil // another caller logged in meanwhile
	}
	c.mu.Lock()
	closed, failed, lastErr := c.closed, c.attempts != tried && c.loginErr != nil, c.loginErr
	c.mu.Unlock()
	switch {
	case closed:
		return nil, errClosed
	case failed:
		return nil, lastErr
	}
	s, err := c.login(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempts++
	c.loginErr = err
	if err != nil {
		return nil, err
	}
	if c.closed {
		s.fail(errClosed)
		return nil, errClosed
	}
	c.sess = s
	return s, nil
}

var errClosed = errors.New("AMI: the target is closed")

// current is the session if it is still up.
func (c *amiClient) current() *amiSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil && c.sess.alive() {
		return c.sess
	}
	return nil
}

// login connects, reads the greeting and logs in with Events: off, all within
// Timeout.
func (c *amiClient) login(ctx context.Context) (*amiSession, error) {
	ctx, cancel := c.o.timeout(ctx)
	defer cancel()
	addr := c.o.Address
	op := "AMI " + addr
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fix := "check [Asterisk] Address, and that manager.conf has enabled = yes and binds a port and address this host can reach (and no firewall drops it)"
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, down(op, fmt.Sprintf("no connection within %s ([Asterisk] Timeout)", c.o.Timeout), fix)
		}
		return nil, down(op, err.Error(), fix)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// A stop (ctx) ends a login under way too.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	r := bufio.NewReader(conn)
	line, err := readLine(r)
	if err != nil {
		got := ""
		if line != "" {
			got = fmt.Sprintf(" (it sent %q and stopped)", line)
		}
		return nil, down(op, fmt.Sprintf("no greeting from Asterisk's manager interface within %s%s: %v", c.o.Timeout, got, err),
			"check that [Asterisk] Address is manager.conf's port (5038 unless changed)")
	}
	banner := strings.TrimSpace(line)
	if !strings.HasPrefix(banner, amiBanner) {
		return nil, down(op, fmt.Sprintf("not Asterisk's manager interface (it greets with %q)", clip(banner)),
			"set [Asterisk] Address to manager.conf's port (5038 unless changed)")
	}
	login := "Action: Login\r\nActionID: pb-login\r\nUsername: " + c.o.Username + "\r\nSecret: " + c.o.Secret.Reveal() + "\r\nEvents: off\r\n\r\n"
	if _, err := conn.Write([]byte(login)); err != nil {
		return nil, down(op+": Login", err.Error(), "")
	}
	for {
		m, err := readMessage(r)
		if err != nil {
			return nil, down(op+": Login", fmt.Sprintf("no answer within %s: %v", c.o.Timeout, err), "")
		}
		if m["actionid"] != "pb-login" {
			continue // an event sent before the login took effect
		}
		if !strings.EqualFold(m["response"], "Success") {
			return nil, down(op+": Login", fmt.Sprintf("Asterisk refused the login as %q (%s)", c.o.Username, m["message"]),
				"check [Asterisk] Username and Secret against manager.conf, and that the user's permit = lets this host in (Asterisk says the same for both)")
		}
		break
	}
	_ = conn.SetDeadline(time.Time{})
	ok = true
	s := &amiSession{conn: conn, banner: banner, pending: map[string]chan amiMessage{}, done: make(chan struct{}), lastUse: c.o.Clock.Now()}
	go s.read(r)
	return s, nil
}

// readLine reads one line, returning what came before an error too.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if len(line) > 200 {
		line = line[:200]
	}
	return line, err
}

// readMessage reads one block of "Key: value" lines up to an empty line.
func readMessage(r *bufio.Reader) (amiMessage, error) {
	m := amiMessage{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(m) == 0 {
				continue // a stray empty line between blocks
			}
			return m, nil
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			k = strings.ToLower(strings.TrimSpace(k))
			if _, dup := m[k]; !dup {
				m[k] = strings.TrimSpace(v)
			}
		}
	}
}

// read hands each response to its action until the connection ends.
func (s *amiSession) read(r *bufio.Reader) {
	for {
		m, err := readMessage(r)
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		ch := s.pending[m["actionid"]]
		delete(s.pending, m["actionid"])
		s.mu.Unlock()
		if ch != nil {
			ch <- m // buffered: the action may have given up
		}
	}
}

// fail ends the session (once) and every action waiting on it.
func (s *amiSession) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return
	default:
	}
	s.err = err
	close(s.done)
	s.conn.Close()
}

func (s *amiSession) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *amiSession) quietSince() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUse
}

// action sends one action (fields in order after Action and ActionID) and
// waits, at most Timeout, for its response. A session that does not answer
// within Timeout is ended, so the next action logs in afresh.
func (c *amiClient) action(ctx context.Context, name string, fields ...string) (amiMessage, error) {
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.o.timeout(ctx)
	defer cancel()
	ch := make(chan amiMessage, 1)
	s.mu.Lock()
	s.next++
	id := "pb-" + strconv.FormatUint(s.next, 10)
	s.pending[id] = ch
	s.lastUse = c.o.Clock.Now()
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}
	var b strings.Builder
	b.WriteString("Action: " + name + "\r\nActionID: " + id + "\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	s.wmu.Lock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(c.o.Timeout))
	_, err = s.conn.Write([]byte(b.String()))
	s.wmu.Unlock()
	if err != nil {
		forget()
		s.fail(err)
		return nil, down("AMI "+c.o.Address+": "+name, "the connection broke: "+err.Error(), "")
	}
	select {
	case m := <-ch:
		return m, nil
	case <-s.done:
		forget()
		return nil, down("AMI "+c.o.Address+": "+name, fmt.Sprintf("the connection broke: %v", s.err), "")
	case <-ctx.Done():
		forget()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.fail(errors.New("an action got no answer"))
			return nil, down("AMI "+c.o.Address+": "+name, fmt.Sprintf("no answer within %s ([Asterisk] Timeout); the session is ended and made again", c.o.Timeout),
				"check that Asterisk is up and not overloaded, or raise [Asterisk] Timeout")
		}
		return nil, ctx.Err()
	}
}

func (c *amiClient) set(ctx context.Context, name, state string) error {
	m, err := c.action(ctx, "Setvar", "Variable: DEVICE_STATE(Custom:"+name+")", "Value: "+state)
	if err != nil {
		return err
	}
	if strings.EqualFold(m["response"], "Success") {
		return nil
	}
	return c.refusal("Setvar DEVICE_STATE(Custom:"+name+")", m, state)
}

// remove sets a departed user's device UNAVAILABLE: AMI cannot delete a
// Custom: device.
func (c *amiClient) remove(ctx context.Context, name string) error {
	return c.set(ctx, name, "UNAVAILABLE")
}

func (c *amiClient) get(ctx context.Context, name string) (string, error) {
	m, err := c.action(ctx, "Getvar", "Variable: DEVICE_STATE(Custom:"+name+")")
	if err != nil {
		return "", err
	}
	if !strings.EqualFold(m["response"], "Success") {
		return "", c.refusal("Getvar DEVICE_STATE(Custom:"+name+")", m, "")
	}
	return m["value"], nil
}

func (c *amiClient) ping(ctx context.Context) error {
	m, err := c.action(ctx, "Ping")
	if err != nil {
		return err
	}
	if !strings.EqualFold(m["response"], "Success") {
		return c.refusal("Ping", m, "")
	}
	return nil
}

// refusal turns an error response into an error with its fix.
func (c *amiClient) refusal(what string, m amiMessage, state string) error {
	msg := m["message"]
	op := "AMI " + c.o.Address + ": " + what
	switch lower := strings.ToLower(msg); {
	case strings.Contains(lower, "permission denied"):
		return down(op, fmt.Sprintf("%s: manager user %q may not do this", msg, c.o.Username), "add call to the user's write = line in manager.conf, then manager reload")
	case state != "" && strings.Contains(lower, "variable not set"):
		// Seen while Asterisk boots (the manager answers before func_devstate
		// is loaded); the states themselves are checked with [Mapping].
		return down(op+" = "+state, msg+": Asterisk cannot set Custom: device states now; it is still starting, or func_devstate is not loaded",
			"if it lasts: module load func_devstate.so on the Asterisk console")
	}
	return failed(op, m["response"]+" "+msg, "")
}

// check logs in and asks which actions the manager user may run
// (ListCommands lists only those): Setvar is needed.
func (c *amiClient) check(ctx context.Context) (string, error) {
	m, err := c.action(ctx, "ListCommands")
	if err != nil {
		return "", err
	}
	s := c.current()
	banner := amiBanner
	if s != nil {
		banner = s.banner
	}
	if _, ok := m["setvar"]; !ok {
		return "", failed("AMI "+c.o.Address+": ListCommands", fmt.Sprintf("logged in as %q, but that manager user may not run Setvar", c.o.Username),
			"add call to the user's write = line in manager.conf, then manager reload")
	}
	return fmt.Sprintf("%s at %s; logged in as %s, who may run Setvar", banner, c.o.Address, c.o.Username), nil
}

func (c *amiClient) close() {
	c.mu.Lock()
	c.closed = true
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		s.wmu.Lock()
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = s.conn.Write([]byte("Action: Logoff\r\nActionID: pb-logoff\r\n\r\n"))
		s.wmu.Unlock()
		s.fail(errClosed)
	}
}

// keep keeps a session up until ctx ends: logs in (again, with backoff after
// a failure), pings it after KeepAlive of quiet, and notices when it breaks.
func (c *amiClient) keep(ctx context.Context) {
	clk := c.o.Clock
	b := backoff.Backoff{Policy: backoff.Policy{Min: time.Second, Max: time.Minute}}
	lastErr, wasUp := "", false
	for ctx.Err() == nil {
		s, err := c.session(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, errClosed) {
				return
			}
			wait := b.Next()
			if err.Error() != lastErr {
				lastErr = err.Error()
				c.log.Warn("No AMI session; trying again", "err", lastErr, "retryIn", b.Current())
			}
			if clk.Sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		b.Reset()
		if lastErr != "" || !wasUp {
			c.log.Info("AMI session up", "address", c.o.Address, "user", c.o.Username, "greeting", s.banner)
		}
		lastErr, wasUp = "", true
		c.watch(ctx, s)
		if ctx.Err() == nil && !c.isClosed() {
			c.log.Warn("AMI connection lost; logging in again", "address", c.o.Address, "err", fmt.Sprint(s.err))
			lastErr = "lost"
		}
	}
}

// watch pings s after KeepAlive of quiet until it ends or ctx does.
func (c *amiClient) watch(ctx context.Context, s *amiSession) {
	clk := c.o.Clock
	for {
		wait := c.o.KeepAlive - clk.Now().Sub(s.quietSince())
		if wait <= 0 {
			_ = c.ping(ctx) // a failure ends the session; done says so below
			wait = c.o.KeepAlive
		}
		t := clk.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			return
		case <-t.C():
		}
	}
}

func (c *amiClient) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// clip shortens a greeting for a message.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
