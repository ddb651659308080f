package sip

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
)

// doc is what a dialog-info body says, read with encoding/xml.
type doc struct {
	XMLName xml.Name `xml:"dialog-info"`
	Version string   `xml:"version,attr"`
	State   string   `xml:"state,attr"`
	Entity  string   `xml:"entity,attr"`
	Dialogs []struct {
		ID        string `xml:"id,attr"`
		Direction string `xml:"direction,attr"`
		State     string `xml:"state"`
		Identity  string `xml:"local>identity"`
		Target    struct {
			URI string `xml:"uri,attr"`
		} `xml:"local>target"`
	} `xml:"dialog"`
}

func readDoc(t *testing.T, body string) doc {
	t.Helper()
	var d doc
	if err := xml.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("dialog-info body does not parse: %v\n%s", err, body)
	}
	return d
}

// shows is what the document lights: the state of its one dialog, or
// "terminated" for none.
func (d doc) shows() string {
	if len(d.Dialogs) == 0 {
		return "terminated"
	}
	return d.Dialogs[0].State
}

// checkDialogPublish asserts what every Event: dialog PUBLISH carries, and
// returns its document (zero without a body).
func checkDialogPublish(t *testing.T, r seen, uri, expires string, withBody bool) doc {
	t.Helper()
	if r.Method != "PUBLISH" || r.RequestURI != uri || r.h("Event") != "dialog" || r.h("Expires") != expires {
		t.Errorf("got %s %s Event=%q Expires=%q, want PUBLISH %s Event=dialog Expires=%s",
			r.Method, r.RequestURI, r.h("Event"), r.h("Expires"), uri, expires)
	}
	if !withBody {
		if r.Body != "" || r.h("Content-Type") != "" {
			t.Errorf("want no body, got Content-Type %q and\n%s", r.h("Content-Type"), r.Body)
		}
		return doc{}
	}
	if r.h("Content-Type") != "application/dialog-info+xml" {
		t.Errorf("Content-Type %q, want application/dialog-info+xml", r.h("Content-Type"))
	}
	d := readDoc(t, r.Body)
	if d.Entity != uri || d.State != "full" {
		t.Errorf("entity %q, state %q; want %s, full:\n%s", d.Entity, d.State, uri, r.Body)
	}
	return d
}

// With Event = dialog a Teams call is a confirmed dialog and the next state
// modifies the same publication (SIP-If-Match) with the next version; a refresh
// carries no body and leaves the version; a removal is Expires: 0. Each
// document is full state; an idle user's holds no dialog.
func TestDialogPublicationLifecycle(t *testing.T) {
	f := startPBX(t, nil)
	clk := clock.NewFake(time.Now())
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventDialog, Expires: 10 * time.Minute}, Clock: clk})
	uri := "sip:1001@pbx.example"

	steps := []struct {
		a    presence.Availability
		act  presence.Activity
		want string
	}{
		{presence.Busy, presence.ActInACall, "confirmed"},
		{presence.Available, presence.ActAvailable, "terminated"},
		{presence.DoNotDisturb, presence.ActPresenting, "confirmed"},
		{presence.Offline, presence.ActOffWork, "terminated"},
	}
	for i, s := range steps {
		if err := send1(t, p, itemFor(uri, s.a, s.act)); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		r := reqs[len(reqs)-1]
		d := checkDialogPublish(t, r, uri, "600", true)
		if d.Version != fmt.Sprint(i) || d.shows() != s.want {
			t.Errorf("%s/%s: version %s showing %s, want version %d showing %s:\n%s", s.a, s.act, d.Version, d.shows(), i, s.want, r.Body)
		}
		wantMatch := ""
		if i > 0 {
			wantMatch = fmt.Sprintf("etag-%d", i)
		}
		if r.h("SIP-If-Match") != wantMatch {
			t.Errorf("%s/%s: SIP-If-Match %q, want %q", s.a, s.act, r.h("SIP-If-Match"), wantMatch)
		}
		if s.want == "confirmed" {
			dl := d.Dialogs[0]
			if len(d.Dialogs) != 1 || dl.ID != DialogID || dl.Direction != "initiator" || dl.Identity != uri || dl.Target.URI != uri {
				t.Errorf("the call's dialog: %+v", d.Dialogs)
			}
		}
	}
	if c := p.counts(); c.initial != 1 || c.modified != 3 {
		t.Errorf("counts %+v; want one publication modified three times", c)
	}

	clk.Advance(9 * time.Minute)
	if _, n, _ := p.refreshDue(context.Background()); n != 0 {
		t.Fatal("refresh failed")
	}
	reqs := f.requests()
	checkDialogPublish(t, reqs[len(reqs)-1], uri, "600", false)
	if pub := p.publication(dk(uri)); pub == nil || pub.Version != 3 || pub.ETag != "etag-5" {
		t.Errorf("after the refresh: %+v; want version 3 kept and etag-5", pub)
	}
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	reqs = f.requests()
	if d := checkDialogPublish(t, reqs[len(reqs)-1], uri, "600", true); d.Version != "4" {
		t.Errorf("after a refresh the next document has version %s, want 4", d.Version)
	}

	// The user leaves while in a call: the key is put out (a document without
	// dialog, version 5), then the publication removed. Kamailio notifies
	// watchers of a removal with the document it held.
	if err := send1(t, p, removal(uri)); err != nil {
		t.Fatal(err)
	}
	reqs = f.requests()
	out, r := reqs[len(reqs)-2], reqs[len(reqs)-1]
	if d := checkDialogPublish(t, out, uri, "600", true); d.shows() != "terminated" || d.Version != "5" || out.h("SIP-If-Match") != "etag-6" {
		t.Errorf("before the removal: version %s showing %s, SIP-If-Match %q; want 5, terminated, etag-6", d.Version, d.shows(), out.h("SIP-If-Match"))
	}
	checkDialogPublish(t, r, uri, "0", false)
	if r.h("SIP-If-Match") != "etag-7" || p.Published() != 0 {
		t.Errorf("removal: SIP-If-Match %q, %d published; want etag-7, none", r.h("SIP-If-Match"), p.Published())
	}
	if c := p.counts(); c.removed != 1 {
		t.Errorf("counts %+v", c)
	}

	// An idle user's publication is removed at once.
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p, removal(uri)); err != nil {
		t.Fatal(err)
	}
	reqs = f.requests()
	checkDialogPublish(t, reqs[len(reqs)-1], uri, "0", false)
	checkDialogPublish(t, reqs[len(reqs)-2], uri, "600", true)
	if reqs[len(reqs)-2].h("SIP-If-Match") != "" {
		t.Errorf("the removal of an idle publication modified it first")
	}
	if p.publication(pk(uri)) != nil {
		t.Error("Event = dialog made a presence publication")
	}
}

// A ringing state (a [Mapping] rule's dialog column says early) is an early
// dialog of which the user is the recipient, what makes a BLF key blink; a
// column saying terminated leaves a busy state idle.
func TestDialogColumn(t *testing.T) {
	f := startPBX(t, nil)
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventDialog}})
	for _, c := range []struct {
		value, want, direction string
	}{
		{"busy | open | busy | Ringing | early", "early", "recipient"},
		{"busy | open | meeting | In a meeting | terminated", "terminated", ""},
		{"busy | open | meeting | In a meeting", "confirmed", "initiator"},
		{"lunch | open | meal | At lunch", "terminated", ""},
	} {
		m, err := presence.ParseMapped(c.value)
		if err != nil {
			t.Fatal(err)
		}
		it := itemFor("sip:1001@pbx.example", presence.Busy, presence.ActInAMeeting)
		it.Mapped = m
		if err := send1(t, p, it); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		d := checkDialogPublish(t, reqs[len(reqs)-1], "sip:1001@pbx.example", "3600", true)
		if d.shows() != c.want || (len(d.Dialogs) > 0 && d.Dialogs[0].Direction != c.direction) {
			t.Errorf("%q: %+v, want %s (%s)", c.value, d.Dialogs, c.want, c.direction)
		}
	}
}

// A refused entity tag (412, or Kamailio's 500) starts the publication over,
// and its version still grows: a watcher that saw the last document must not
// take the fresh one for an old one (RFC 4235 section 4.1).
func TestDialogRefusedConditionalKeepsVersionGrowing(t *testing.T) {
	for _, code := range []int{412, 500} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			var mu sync.Mutex
			refuse := false
			f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
				mu.Lock()
				defer mu.Unlock()
				if refuse && r.h("SIP-If-Match") != "" {
					return reply{Code: code, Reason: "Refused"}
				}
				return f.lockedOK(r)
			})
			p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventDialog}})
			uri := "sip:1001@pbx.example"
			for _, act := range []presence.Activity{presence.ActInACall, presence.ActAvailable} {
				a := presence.Busy
				if act == presence.ActAvailable {
					a = presence.Available
				}
				if err := send1(t, p, itemFor(uri, a, act)); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			refuse = true
			mu.Unlock()
			if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
				t.Fatal(err)
			}
			reqs := f.requests()
			if len(reqs) != 4 {
				t.Fatalf("%d requests, want 4", len(reqs))
			}
			refused, fresh := readDoc(t, reqs[2].Body), readDoc(t, reqs[3].Body)
			if reqs[3].h("SIP-If-Match") != "" || refused.Version != "2" || fresh.Version != "2" || fresh.shows() != "confirmed" {
				t.Errorf("refused version %s, fresh version %s (If-Match %q) showing %s; want 2 and 2, afresh, confirmed",
					refused.Version, fresh.Version, reqs[3].h("SIP-If-Match"), fresh.shows())
			}
			if pub := p.publication(dk(uri)); pub == nil || pub.ETag != "etag-3" || pub.Version != 2 {
				t.Errorf("kept %+v", pub)
			}
		})
	}
}

// A refresh the server refuses (it restarted and lost the publication)
// publishes the last state afresh with the next version.
func TestDialogRefusedRefreshRepublishesWithNextVersion(t *testing.T) {
	var mu sync.Mutex
	refuse := false
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		defer mu.Unlock()
		if refuse && r.h("SIP-If-Match") != "" {
			return reply{Code: 500, Reason: "Server Internal Error"}
		}
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventDialog}})
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	if err := p.Probe(context.Background()); !errors.Is(err, delivery.ErrTargetForgot) {
		t.Fatalf("Probe = %v, want ErrTargetForgot", err)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (publish, refused refresh, afresh)", len(reqs))
	}
	checkDialogPublish(t, reqs[1], uri, "3600", false)
	if d := checkDialogPublish(t, reqs[2], uri, "3600", true); d.Version != "1" || d.shows() != "confirmed" || reqs[2].h("SIP-If-Match") != "" {
		t.Errorf("afresh: version %s showing %s, If-Match %q; want 1, confirmed, none", d.Version, d.shows(), reqs[2].h("SIP-If-Match"))
	}
}

// A document sent without an answer (a timeout) may have reached the server:
// its version is not used again for another state.
func TestDialogVersionNotReusedAfterTimeout(t *testing.T) {
	var mu sync.Mutex
	drop := false
	f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
		mu.Lock()
		d := drop
		mu.Unlock()
		if d {
			time.Sleep(400 * time.Millisecond) // past the publisher's Timeout: no answer in time
		}
		return f.lockedOK(r)
	})
	p := newPublisher(t, Options{Settings: Settings{Transport: "tcp", Server: f.TCP, Event: EventDialog, Timeout: 200 * time.Millisecond}})
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	drop = true
	mu.Unlock()
	if err := send1(t, p, itemFor(uri, presence.Available, presence.ActAvailable)); !errors.Is(err, delivery.ErrTargetDown) {
		t.Fatalf("err = %v, want no answer (ErrTargetDown)", err)
	}
	mu.Lock()
	drop = false
	mu.Unlock()
	time.Sleep(300 * time.Millisecond) // the late answer comes and goes
	if err := send1(t, p, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	last := readDoc(t, reqs[len(reqs)-1].Body)
	if last.Version != "2" {
		t.Errorf("after version 1 went unanswered the next document has version %s, want 2", last.Version)
	}
}

// The version is kept in the state file with the publication: after a
// restart the next document goes on from it, on bbolt as in memory.
func TestDialogVersionAcrossRestart(t *testing.T) {
	f := startPBX(t, nil)
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	uri := "sip:1001@pbx.example"
	o := Options{Settings: Settings{Server: f.UDP, Event: EventBoth}, ETags: BoltPublications(db)}
	p := newPublisher(t, o)
	for _, s := range []struct {
		a   presence.Availability
		act presence.Activity
	}{{presence.Busy, presence.ActInACall}, {presence.Available, presence.ActAvailable}, {presence.Busy, presence.ActInACall}} {
		if err := send1(t, p, itemFor(uri, s.a, s.act)); err != nil {
			t.Fatal(err)
		}
	}
	p.Close()

	p2 := newPublisher(t, o)
	if n := p2.Published(); n != 2 {
		t.Fatalf("%d publications after the restart, want 2 (presence and dialog)", n)
	}
	if err := send1(t, p2, itemFor(uri, presence.Available, presence.ActAvailable)); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 8 {
		t.Fatalf("%d requests, want 8", len(reqs))
	}
	pres, dlg := reqs[6], reqs[7]
	checkPublish(t, pres, uri, "3600", true)
	d := checkDialogPublish(t, dlg, uri, "3600", true)
	if pres.h("SIP-If-Match") != "etag-5" || dlg.h("SIP-If-Match") != "etag-6" || d.Version != "3" || d.shows() != "terminated" {
		t.Errorf("after the restart: presence If-Match %q (want etag-5), dialog If-Match %q (want etag-6), version %s (want 3) showing %s",
			pres.h("SIP-If-Match"), dlg.h("SIP-If-Match"), d.Version, d.shows())
	}
}

// With Event = both each user has two publications, each with its own entity
// tag: a PUBLISH of each event per change, modifications matching each one's
// own tag, and a removal of each.
func TestBothPublications(t *testing.T) {
	f := startPBX(t, nil)
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventBoth}})
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p, itemFor(uri, presence.Available, presence.ActAvailable)); err != nil {
		t.Fatal(err)
	}
	if err := send1(t, p, removal(uri)); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 6 {
		t.Fatalf("%d requests, want 6 (two per step)", len(reqs))
	}
	checkPublish(t, reqs[0], uri, "3600", true)
	if d := checkDialogPublish(t, reqs[1], uri, "3600", true); d.shows() != "confirmed" || !strings.Contains(reqs[0].Body, "on-the-phone") {
		t.Errorf("first: PIDF\n%s\ndialog-info showing %s", reqs[0].Body, d.shows())
	}
	checkPublish(t, reqs[2], uri, "3600", true)
	if d := checkDialogPublish(t, reqs[3], uri, "3600", true); d.shows() != "terminated" || d.Version != "1" {
		t.Errorf("second: dialog-info version %s showing %s", d.Version, d.shows())
	}
	if reqs[2].h("SIP-If-Match") != "etag-1" || reqs[3].h("SIP-If-Match") != "etag-2" {
		t.Errorf("modifications match %q and %q; want each its own tag, etag-1 and etag-2", reqs[2].h("SIP-If-Match"), reqs[3].h("SIP-If-Match"))
	}
	checkPublish(t, reqs[4], uri, "0", false)
	checkDialogPublish(t, reqs[5], uri, "0", false)
	if reqs[4].h("SIP-If-Match") != "etag-3" || reqs[5].h("SIP-If-Match") != "etag-4" || p.Published() != 0 {
		t.Errorf("removals match %q and %q, %d left; want etag-3, etag-4, none", reqs[4].h("SIP-If-Match"), reqs[5].h("SIP-If-Match"), p.Published())
	}
}

// With Event = both, what the dispatcher is told when one of the two
// publications fails: a server that is down is down (and the second PUBLISH is
// not tried: it would wait its timeout too); a failure worth retrying is
// retried even if the other was refused for good; only when both are refused
// for good is the item dropped. The error names both events' answers.
func TestBothErrors(t *testing.T) {
	cases := []struct {
		name             string
		presence, dialog int
		permanent, down  bool
		requests         int
		want             []string
	}{
		{"presence 489", 489, 200, true, false, 2, []string{"Event = dialog", "[Asterisk]"}},
		{"dialog 489", 200, 489, true, false, 2, []string{"(Event: dialog): 489", "presence_dialoginfo"}},
		{"both 489", 489, 489, true, false, 2, []string{"Event: presence", "(Event: dialog): 489"}},
		{"dialog 480, presence 404", 404, 480, false, false, 2, []string{"(Event: dialog): 480", "404"}},
		{"presence 503", 503, 200, false, true, 1, []string{"503"}},
		{"dialog 503, presence 489", 489, 503, false, true, 2, []string{"(Event: dialog): 503", "489"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := startPBX(t, func(f *fakePBX, r seen, n int) reply {
				code := c.presence
				if r.h("Event") == "dialog" {
					code = c.dialog
				}
				if code == 200 {
					return f.lockedOK(r)
				}
				return reply{Code: code, Reason: "No"}
			})
			p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventBoth}})
			err := send1(t, p, itemFor("sip:1001@pbx.example", presence.Busy, presence.ActInACall))
			var perm *delivery.PermanentError
			if err == nil || errors.As(err, &perm) != c.permanent || errors.Is(err, delivery.ErrTargetDown) != c.down {
				t.Fatalf("err = %v; want permanent=%v down=%v", err, c.permanent, c.down)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to say %q", err, w)
				}
			}
			if n := len(f.requests()); n != c.requests {
				t.Errorf("%d requests, want %d", n, c.requests)
			}
		})
	}
}

// Reassert with Event = dialog refreshes a publication that shows the same
// dialog state (another note or activity does not change what a BLF key
// shows), and publishes one that shows another.
func TestDialogReassert(t *testing.T) {
	f := startPBX(t, nil)
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventBoth}})
	uri := "sip:1001@pbx.example"
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	dnd := itemFor(uri, presence.DoNotDisturb, presence.ActPresenting) // confirmed too, another PIDF
	if err := p.Reassert(context.Background(), []delivery.Item{dnd})[0]; err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()[2:]
	if len(reqs) != 2 {
		t.Fatalf("%d requests for the re-assertion, want 2", len(reqs))
	}
	checkPublish(t, reqs[0], uri, "3600", true) // another PIDF: published
	checkDialogPublish(t, reqs[1], uri, "3600", false)
	if reqs[1].h("SIP-If-Match") != "etag-2" {
		t.Errorf("dialog refresh matches %q, want etag-2", reqs[1].h("SIP-If-Match"))
	}
	if err := p.Reassert(context.Background(), []delivery.Item{itemFor(uri, presence.Available, presence.ActAvailable)})[0]; err != nil {
		t.Fatal(err)
	}
	reqs = f.requests()[4:]
	if len(reqs) != 2 {
		t.Fatalf("%d requests for the second re-assertion, want 2", len(reqs))
	}
	if d := checkDialogPublish(t, reqs[1], uri, "3600", true); d.shows() != "terminated" || d.Version != "1" {
		t.Errorf("dialog re-asserted as version %s showing %s, want 1, terminated", d.Version, d.shows())
	}
}

// After [SIP] Event is changed from both to presence, the dialog publications
// kept from before are withdrawn by the refresh loop at once (the key put out,
// then Expires: 0), so a BLF key lit for a call does not stay lit until the
// publication lapses; the presence publications are kept and modified.
func TestWithdrawnWhenEventNoLongerNamed(t *testing.T) {
	f := startPBX(t, nil)
	mem := &memStore{pubs: map[Key]Publication{}}
	uri := "sip:1001@pbx.example"
	p := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventBoth}, ETags: mem})
	if err := send1(t, p, itemFor(uri, presence.Busy, presence.ActInACall)); err != nil {
		t.Fatal(err)
	}
	p.Close()

	p2 := newPublisher(t, Options{Settings: Settings{Server: f.UDP, Event: EventPresence}, ETags: mem})
	if due, failed, err := p2.refreshDue(context.Background()); due != 1 || failed != 0 {
		t.Fatalf("refresh round: %d due, %d failed (%v); want the dialog publication due", due, failed, err)
	}
	reqs := f.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	if d := checkDialogPublish(t, reqs[2], uri, "3600", true); d.shows() != "terminated" || reqs[2].h("SIP-If-Match") != "etag-2" {
		t.Errorf("the lit key is not put out first: showing %s, SIP-If-Match %q", d.shows(), reqs[2].h("SIP-If-Match"))
	}
	checkDialogPublish(t, reqs[3], uri, "0", false)
	if reqs[3].h("SIP-If-Match") != "etag-3" {
		t.Errorf("withdrawal matches %q, want etag-3", reqs[3].h("SIP-If-Match"))
	}
	if _, ok := mem.pubs[dk(uri)]; ok || mem.pubs[pk(uri)].ETag != "etag-1" {
		t.Errorf("kept %+v; want only the presence publication", mem.pubs)
	}
	if err := send1(t, p2, itemFor(uri, presence.Away, presence.ActAway)); err != nil {
		t.Fatal(err)
	}
	if reqs := f.requests(); len(reqs) != 5 || reqs[4].h("SIP-If-Match") != "etag-1" || reqs[4].h("Event") != "presence" {
		t.Errorf("the next state: %d requests, the last %+v", len(reqs), reqs[len(reqs)-1])
	}
}
