package delivery

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// The Outbox suite: BoltOutbox and MemOutbox behave the same (telegraf's
// buffer_disk/buffer_mem with one suite is the model).
func TestOutbox(t *testing.T) {
	impls := map[string]func(t *testing.T) Outbox{
		"bolt": func(t *testing.T) Outbox {
			db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return BoltOutbox(db)
		},
		"mem": func(*testing.T) Outbox { return MemOutbox() },
	}
	for name, open := range impls {
		t.Run(name, func(t *testing.T) {
			t.Run("coalesce", func(t *testing.T) { outboxCoalesces(t, open(t)) })
			t.Run("pick", func(t *testing.T) { outboxPicksRoundRobin(t, open(t)) })
			t.Run("settle", func(t *testing.T) { outboxSettles(t, open(t)) })
			t.Run("delivered", func(t *testing.T) { outboxDelivered(t, open(t)) })
		})
	}
}

var all = func(string) bool { return true }

func upns(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.User.UPN)
	}
	return out
}

// Per target the newest state of a user replaces the pending one; Seq grows per
// target; accepts filters a target's users.
func outboxCoalesces(t *testing.T, o Outbox) {
	sipOnly := func(u users.User) bool { return u.SIPURI != "" }
	noSIP := item("c@x", presence.Away, presence.ActAway)
	noSIP.User.SIPURI = ""
	targets, accepts := []string{"http", "sip"}, []func(users.User) bool{nil, sipOnly}
	if err := o.Enqueue(targets, accepts, []Item{item("a@x", presence.Available, presence.ActAvailable), noSIP}); err != nil {
		t.Fatal(err)
	}
	if err := o.Enqueue(targets, accepts, []Item{item("a@x", presence.Busy, presence.ActInACall)}); err != nil {
		t.Fatal(err)
	}
	if o.Pending("http") != 2 || o.Pending("sip") != 1 || o.HasPending("sip", "c@x") || !o.HasPending("http", "c@x") {
		t.Fatalf("pending http %d sip %d", o.Pending("http"), o.Pending("sip"))
	}
	got, _, err := o.Pick("http", 10, "", all)
	if err != nil || len(got) != 2 || got[0].State.Activity != presence.ActInACall || got[0].Seq != 3 || got[1].Seq != 2 {
		t.Fatalf("http pending %+v, %v; want a@x's newest state with seq 3, then c@x with 2", got, err)
	}
	if got, _, _ := o.Pick("sip", 10, "", all); len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("sip pending %+v; want a@x with the target's own seq 2", got)
	}
}

// Pick goes on after the last user it took and round to the start again, and
// leaves out the users want refuses.
func outboxPicksRoundRobin(t *testing.T, o Outbox) {
	var items []Item
	for _, u := range []string{"a@x", "b@x", "c@x", "d@x"} {
		items = append(items, item(u, presence.Available, presence.ActAvailable))
	}
	o.Enqueue([]string{"t"}, []func(users.User) bool{nil}, items)
	got, last, _ := o.Pick("t", 2, "", all)
	if !slices.Equal(upns(got), []string{"a@x", "b@x"}) || last != "b@x" {
		t.Fatalf("first pick %v, last %q", upns(got), last)
	}
	got, last, _ = o.Pick("t", 3, last, all)
	if !slices.Equal(upns(got), []string{"c@x", "d@x", "a@x"}) || last != "a@x" {
		t.Fatalf("second pick %v, last %q; want round to the start", upns(got), last)
	}
	got, _, _ = o.Pick("t", 10, "b@x", func(upn string) bool { return upn != "d@x" })
	if !slices.Equal(upns(got), []string{"c@x", "a@x", "b@x"}) {
		t.Fatalf("pick without d@x %v", upns(got))
	}
}

// Settle removes what the target accepted or refused, unless a newer state
// replaced it during the Send, and remembers what it accepted.
func outboxSettles(t *testing.T, o Outbox) {
	one := []func(users.User) bool{nil}
	o.Enqueue([]string{"t"}, one, []Item{item("a@x", presence.Available, presence.ActAvailable),
		item("b@x", presence.Away, presence.ActAway), item("c@x", presence.Busy, presence.ActBusy)})
	sent, _, _ := o.Pick("t", 10, "", all)
	// While the Send is under way, b@x changes.
	o.Enqueue([]string{"t"}, one, []Item{item("b@x", presence.Busy, presence.ActInACall)})
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	var accepted []Delivered
	for _, it := range sent[:2] {
		accepted = append(accepted, Delivered{Target: "t", UPN: it.User.UPN, User: it.User, State: it.State, Mapped: it.Mapped, Seq: it.Seq, At: at})
	}
	if err := o.Settle("t", accepted, sent[2:]); err != nil {
		t.Fatal(err)
	}
	left, _, _ := o.Pick("t", 10, "", all)
	if len(left) != 1 || left[0].User.UPN != "b@x" || left[0].State.Activity != presence.ActInACall {
		t.Fatalf("pending after the settle %+v; want only b@x's newer state", left)
	}
	if d, ok, err := o.Delivered("t", "a@x"); err != nil || !ok || d.Seq != sent[0].Seq || !d.At.Equal(at) {
		t.Fatalf("Delivered(a@x) = %+v, %v, %v", d, ok, err)
	}
	if _, ok, _ := o.Delivered("t", "c@x"); ok {
		t.Fatal("a refused state is remembered as delivered")
	}
}

// DeliveredAfter pages through what was accepted before a time, without users
// that have a newer state pending and without removals; Shown lists the users
// whose last delivery was not a removal.
func outboxDelivered(t *testing.T, o Outbox) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	var accepted []Delivered
	for i, u := range []string{"a@x", "b@x", "c@x", "d@x", "e@x"} {
		d := Delivered{Target: "t", UPN: u, User: users.User{UPN: u}, Seq: uint64(i + 1), At: at, Reason: ReasonChange}
		switch u {
		case "c@x":
			d.Reason = ReasonRemove
		case "e@x":
			d.At = at.Add(time.Minute) // after the re-assertion began
		}
		accepted = append(accepted, d)
	}
	o.Settle("t", accepted, nil)
	o.Enqueue([]string{"t"}, []func(users.User) bool{nil}, []Item{item("d@x", presence.Busy, presence.ActBusy)})
	page, last, err := o.DeliveredAfter("t", "", 1, at)
	if err != nil || len(page) != 1 || page[0].UPN != "a@x" || last != "a@x" {
		t.Fatalf("first page %+v, last %q, %v", page, last, err)
	}
	page, last, _ = o.DeliveredAfter("t", last, 10, at)
	if len(page) != 1 || page[0].UPN != "b@x" || last != "e@x" {
		t.Fatalf("second page %+v, last %q; want b@x only (c removed, d pending, e too new)", page, last)
	}
	if o.CountDelivered("t") != 5 {
		t.Errorf("CountDelivered = %d", o.CountDelivered("t"))
	}
	shown, err := o.Shown()
	if err != nil || len(shown) != 4 || shown["a@x"].Seq != 1 {
		t.Fatalf("Shown = %v, %v; want everyone but the removed c@x", shown, err)
	}
	if _, ok := shown["c@x"]; ok {
		t.Fatal("a removed user is shown")
	}
}

// BenchmarkEnqueueFirstSightings queues every user's first state at once, as
// at a cold start, in the users file's order (user1, user2, ..., user10,
// user100000: not key order).
func BenchmarkEnqueueFirstSightings(b *testing.B) {
	const n = 50_000
	items := make([]Item, n)
	for i := range items {
		upn := fmt.Sprintf("user%d@contoso.example", i+1)
		items[i] = Item{User: users.User{UPN: upn, SIPURI: "sip:" + upn}, State: presence.State{UPN: upn, Availability: presence.Available, Activity: presence.ActAvailable},
			Reason: ReasonChange, Queued: time.Now()}
	}
	for b.Loop() {
		b.StopTimer()
		db, err := store.Open(filepath.Join(b.TempDir(), "state.db"))
		if err != nil {
			b.Fatal(err)
		}
		o := BoltOutbox(db)
		b.StartTimer()
		if err := o.Enqueue([]string{"http"}, []func(users.User) bool{nil}, items); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		db.Close()
		b.StartTimer()
	}
}
