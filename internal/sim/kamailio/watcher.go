package kamailio

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Notify is one NOTIFY a Watcher received, with its PIDF or dialog-info read
// loosely.
type Notify struct {
	Raw               string   // the body (PIDF or dialog-info XML), as received
	SubscriptionState string   // Subscription-State header
	Basic             string   // "open", "closed" or "" (no tuple)
	Activities        []string // RPID activity element names, e.g. "on-the-phone"
	Note              string   // first note found (tuple or person)
	// DialogStates are the <state> of each <dialog> of a dialog-info body
	// (RFC 4235: "trying", "early", "confirmed", "terminated"), in order.
	DialogStates []string
	At           time.Time // when it arrived
}

// Confirmed reports whether a dialog-info NOTIFY shows a confirmed dialog (a
// call in progress: a BLF key lit busy).
func (n Notify) Confirmed() bool {
	for _, s := range n.DialogStates {
		if s == "confirmed" {
			return true
		}
	}
	return false
}

// Watcher subscribes to one presentity over UDP with plain sockets: a SIP user
// agent of its own, independent of the sipgo publisher under test. It answers
// every NOTIFY with 200 OK, refreshes the subscription at half its lifetime and
// queues the NOTIFYs (up to 256; later ones are dropped while nobody reads).
type Watcher struct {
	conn    net.PacketConn
	server  *net.UDPAddr
	uri     string
	event   string // "presence" or "dialog"
	callID  string
	fromTag string
	notes   chan Notify
	answers chan string // final responses to our SUBSCRIBEs, raw
	done    chan struct{}
	stop    chan struct{}
	once    sync.Once

	mu      sync.Mutex // one SUBSCRIBE transaction at a time
	toTag   string
	cseq    int
	expires int // as granted in the last 2xx
}

// Watch subscribes to uri's presence (e.g. "sip:alice@pbx.example") at server,
// a UDP host:port, and returns once the subscription is accepted. SUBSCRIBE is
// sent again after 500 ms without an answer, six times in all. Close it when done.
func Watch(ctx context.Context, server, uri string) (*Watcher, error) {
	return WatchEvent(ctx, server, uri, "presence")
}

// WatchEvent is Watch for an event package: "presence" (PIDF) or "dialog"
// (RFC 4235 dialog-info, what BLF keys subscribe to).
func WatchEvent(ctx context.Context, server, uri, event string) (*Watcher, error) {
	addr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, fmt.Errorf("watch %s: server %q: %w", uri, server, err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", uri, err)
	}
	w := &Watcher{conn: conn, server: addr, uri: uri, event: event, callID: token() + "@watcher", fromTag: token(),
		notes: make(chan Notify, 256), answers: make(chan string, 16), done: make(chan struct{}),
		stop: make(chan struct{})}
	go w.read()
	if err := w.subscribe(ctx, 600); err != nil {
		w.conn.Close()
		return nil, err
	}
	go w.refresh()
	return w, nil
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// subscribe runs one SUBSCRIBE transaction (expires 0 ends the subscription).
func (w *Watcher) subscribe(ctx context.Context, expires int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cseq++
	to := "<" + w.uri + ">"
	if w.toTag != "" {
		to += ";tag=" + w.toTag
	}
	local := w.conn.LocalAddr().String()
	msg := fmt.Sprintf("SUBSCRIBE %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:watcher@%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d SUBSCRIBE\r\nContact: <sip:watcher@%s>\r\n"+
		"Event: %s\r\nAccept: %s\r\nExpires: %d\r\nContent-Length: 0\r\n\r\n",
		w.uri, local, token(), local, w.fromTag, to, w.callID, w.cseq, local, w.event, accept[w.event], expires)
	for try := 0; try < 6; try++ {
		if _, err := w.conn.WriteTo([]byte(msg), w.server); err != nil {
			return fmt.Errorf("SUBSCRIBE %s to %s: %w", w.uri, w.server, err)
		}
		timer := time.NewTimer(500 * time.Millisecond)
	wait:
		for {
			select {
			case raw := <-w.answers:
				if n, _ := strconv.Atoi(strings.Fields(header(raw, "CSeq"))[0]); n != w.cseq {
					continue // a late answer to an earlier SUBSCRIBE
				}
				timer.Stop()
				code, _ := strconv.Atoi(strings.Fields(raw)[1])
				if code < 200 || code >= 300 {
					return fmt.Errorf("SUBSCRIBE %s to %s: %s", w.uri, w.server, firstLine(raw))
				}
				if w.toTag == "" {
					w.toTag = param(header(raw, "To"), "tag")
				}
				w.expires = grantedExpires(raw, expires)
				return nil
			case <-timer.C:
				break wait
			case <-ctx.Done():
				timer.Stop()
				return fmt.Errorf("SUBSCRIBE %s to %s: %w", w.uri, w.server, ctx.Err())
			case <-w.done:
				timer.Stop()
				return fmt.Errorf("SUBSCRIBE %s: watcher closed", w.uri)
			}
		}
	}
	return fmt.Errorf("SUBSCRIBE %s: no answer from %s in 3 s", w.uri, w.server)
}

// refresh renews the subscription at half its granted lifetime until Close.
func (w *Watcher) refresh() {
	for {
		w.mu.Lock()
		every := time.Duration(max(w.expires, 2)) * time.Second / 2
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-time.After(every):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = w.subscribe(ctx, 600) // best effort: a failed refresh shows as missing NOTIFYs
		cancel()
	}
}

func (w *Watcher) read() {
	defer close(w.done)
	buf := make([]byte, 65535)
	lastNotify := ""
	for {
		n, from, err := w.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		raw := string(buf[:n])
		switch {
		case strings.HasPrefix(raw, "SIP/2.0 "):
			f := strings.Fields(raw)
			cseq := strings.Fields(header(raw, "CSeq"))
			if len(f) > 1 && f[1] >= "200" && len(cseq) == 2 && cseq[1] == "SUBSCRIBE" {
				select {
				case w.answers <- raw:
				default:
				}
			}
		case strings.HasPrefix(raw, "NOTIFY "):
			w.reply(raw, from)
			// A retransmission (our 200 got lost) is answered but not queued again.
			// Only an identical message is one: Kamailio's worker processes may
			// send NOTIFYs of one subscription with CSeqs out of order.
			if raw == lastNotify {
				continue
			}
			lastNotify = raw
			select {
			case w.notes <- parseNotify(raw):
			default: // a test that stopped reading does not block the socket
			}
		}
	}
}

// reply answers a request with 200 OK, echoing the transaction headers.
func (w *Watcher) reply(raw string, to net.Addr) {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		for _, v := range headers(raw, name) {
			b.WriteString(name + ": " + v + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	w.conn.WriteTo([]byte(b.String()), to)
}

// Next returns the next NOTIFY, waiting for it until ctx ends or Close.
func (w *Watcher) Next(ctx context.Context) (Notify, error) {
	select {
	case n := <-w.notes:
		return n, nil
	case <-ctx.Done():
		return Notify{}, ctx.Err()
	case <-w.done:
		return Notify{}, errors.New("watcher closed")
	}
}

// WaitFor returns the first NOTIFY that match accepts, consuming the ones before
// it. On timeout the error describes the last NOTIFY seen.
func (w *Watcher) WaitFor(ctx context.Context, match func(Notify) bool) (Notify, error) {
	var last *Notify
	for {
		n, err := w.Next(ctx)
		if err != nil {
			if last != nil {
				return Notify{}, fmt.Errorf("%w; last NOTIFY: basic=%q activities=%v note=%q", err, last.Basic, last.Activities, last.Note)
			}
			return Notify{}, fmt.Errorf("%w; no NOTIFY received", err)
		}
		if match(n) {
			return n, nil
		}
		last = &n
	}
}

// Close ends the subscription (SUBSCRIBE with Expires: 0, best effort, at most
// a second) and closes the socket. Safe to call more than once.
func (w *Watcher) Close() {
	w.once.Do(func() {
		close(w.stop)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.subscribe(ctx, 0)
		w.conn.Close()
	})
}

// accept is the body type asked for each event package.
var accept = map[string]string{"presence": "application/pidf+xml", "dialog": "application/dialog-info+xml"}

func parseNotify(raw string) Notify {
	n := Notify{SubscriptionState: header(raw, "Subscription-State"), At: time.Now()}
	if i := strings.Index(raw, "\r\n\r\n"); i >= 0 {
		n.Raw = raw[i+4:]
	}
	dec := xml.NewDecoder(strings.NewReader(n.Raw))
	var path []string
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(path) > 0 && path[len(path)-1] == "activities" {
				n.Activities = append(n.Activities, t.Name.Local)
			}
			path = append(path, t.Name.Local)
		case xml.EndElement:
			path = path[:len(path)-1]
		case xml.CharData:
			if len(path) == 0 {
				continue
			}
			switch text := strings.TrimSpace(string(t)); path[len(path)-1] {
			case "basic":
				if n.Basic == "" {
					n.Basic = text
				}
			case "note":
				if n.Note == "" {
					n.Note = text
				}
			case "state":
				if len(path) > 1 && path[len(path)-2] == "dialog" {
					n.DialogStates = append(n.DialogStates, text)
				}
			}
		}
	}
	return n
}

// grantedExpires is the Expires of a 2xx to a SUBSCRIBE: a whole number of
// seconds from 0 to 2**32-1 (RFC 3261 section 20.19), else asked. (Taken as any
// int, 9223372037 overflowed the refresh period into a negative one: a SUBSCRIBE
// flood.)
func grantedExpires(raw string, asked int) int {
	e, err := strconv.ParseUint(header(raw, "Expires"), 10, 32)
	if err != nil {
		return asked
	}
	return int(e)
}

func firstLine(raw string) string {
	line, _, _ := strings.Cut(raw, "\r\n")
	return line
}

var compact = map[string]string{"via": "v", "from": "f", "to": "t", "call-id": "i", "content-length": "l"}

// headers returns every value of a header (full or compact name) in raw. A bare
// CR or LF ends a line too, so no value holds one (reply echoes them).
func headers(raw, name string) []string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	head = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(head)
	var out []string
	for _, line := range strings.Split(head, "\n")[1:] {
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
			return strings.TrimSpace(val)
		}
	}
	return ""
}
