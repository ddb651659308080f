package compose

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/platform/clock"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

type writer struct {
	mu  sync.Mutex
	got []presence.PBXChange
}

func (w *writer) Apply(changes []presence.PBXChange) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, changes...)
}

// WinningTechnology decides, per user, whose state the targets show: a table
// of both values against Teams states and PBX states, through DeliverPBX and
// then a Teams change (Deliver) while the PBX state holds.
func TestWinningTechnology(t *testing.T) {
	const upn = "anna@x"
	var (
		available = state(upn, presence.Available, presence.ActAvailable)
		dnd       = state(upn, presence.DoNotDisturb, presence.ActDoNotDisturb)
		unknown   = state(upn, presence.PresenceUnknown, presence.ActPresenceUnknown)
		none      = presence.State{}
		inCall    = presence.PBXState{UPN: upn, Line: presence.LineInCall, Calls: 1, Changed: t0}
		ringing   = presence.PBXState{UPN: upn, Line: presence.LineRinging, Calls: 1, Changed: t0}
		phoneDND  = presence.PBXState{UPN: upn, Line: presence.LineIdle, DND: true, Changed: t0}
		idle      = presence.PBXState{UPN: upn, Line: presence.LineIdle, Changed: t0}
	)
	cases := []struct {
		name    string
		winning string
		teams   presence.State
		pbx     presence.PBXState
		stale   bool
		// wantQueued: DeliverPBX queues an item (the shown state changes);
		// wantSource and wantState: what Deliver of the Teams state then shows.
		wantQueued bool
		wantSource string
		wantState  string
	}{
		{"SipSimple: a PBX call beats Teams Available", PBXWins, available, inCall, false, true, delivery.SourcePBX, "oncall"},
		{"SipSimple: a PBX call beats Teams DND", PBXWins, dnd, inCall, false, true, delivery.SourcePBX, "oncall"},
		{"SipSimple: ringing is the PBX's word", PBXWins, available, ringing, false, true, delivery.SourcePBX, "oncall"},
		{"SipSimple: DND on the phone", PBXWins, available, phoneDND, false, true, delivery.SourcePBX, "dnd"},
		{"SipSimple: an idle phone leaves Teams", PBXWins, dnd, idle, false, false, delivery.SourceTeams, "dnd"},
		{"MSTeams: Teams Available beats a PBX call", TeamsWins, available, inCall, false, false, delivery.SourceTeams, "available"},
		{"MSTeams: the PBX fills in for unknown", TeamsWins, unknown, inCall, false, true, delivery.SourcePBX, "oncall"},
		{"MSTeams: the PBX fills in while stale", TeamsWins, available, inCall, true, true, delivery.SourcePBX, "oncall"},
		{"MSTeams: stale and idle is the Stale rule", TeamsWins, available, idle, true, false, delivery.SourceTeams, "unknown"},
		{"MSTeams: the PBX fills in before Teams is read", TeamsWins, none, inCall, false, true, delivery.SourcePBX, "oncall"},
		{"default (empty) is MSTeams", "", available, inCall, false, false, delivery.SourceTeams, "available"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept := states{}
			if tc.teams.UPN != "" {
				kept[upn] = tc.teams
			}
			c, q := newComposer(t, filepath.Join(t.TempDir(), "s.db"), kept, clock.NewFake(t0))
			w := &writer{}
			c.o.Winning, c.o.Writers = tc.winning, map[string]Writer{"main": w}
			u := users.User{UPN: upn, SIPURI: "sip:1@pbx", Account: "main"}
			if tc.stale {
				if err := c.setStale("main", t0); err != nil {
					t.Fatal(err)
				}
			}
			ch := presence.PBXChange{User: u, Current: tc.pbx}
			if err := c.DeliverPBX(context.Background(), []presence.PBXChange{ch}); err != nil {
				t.Fatal(err)
			}
			if got := q.take(); (len(got) == 1) != tc.wantQueued || len(got) > 1 {
				t.Fatalf("DeliverPBX queued %d items; want queued=%v", len(got), tc.wantQueued)
			} else if len(got) == 1 && (got[0].Source != tc.wantSource || got[0].Mapped.State != tc.wantState ||
				got[0].Reason != delivery.ReasonPBX || !got[0].PBX.SameAs(tc.pbx)) {
				t.Fatalf("DeliverPBX queued %+v; want source %s, state %s", got[0], tc.wantSource, tc.wantState)
			}
			if len(w.got) != 1 || w.got[0].User != u {
				t.Fatalf("the account's writer was handed %+v", w.got)
			}
			if tc.teams.UPN == "" {
				return
			}
			reason, err := delivery.ReasonChange, c.Deliver(context.Background(), []presence.Change{{User: u, Current: tc.teams}})
			if tc.stale {
				c.queueAccount(context.Background(), Group{Account: "main", Users: []users.User{u}}, delivery.ReasonStale)
				reason = delivery.ReasonStale
			}
			if err != nil {
				t.Fatal(err)
			}
			got := q.take()
			last := got[len(got)-1]
			if last.Source != tc.wantSource || last.Mapped.State != tc.wantState || last.Reason != reason {
				t.Errorf("%s shows %s from %s; want %s from %s", reason, last.Mapped.State, last.Source, tc.wantState, tc.wantSource)
			}
		})
	}
}

// The PBX's state ending gives the targets Teams back (both values), and a
// user who was never in a call is not queued at all when the PBX says idle.
func TestPBXStateEnds(t *testing.T) {
	const upn = "anna@x"
	available := state(upn, presence.Available, presence.ActAvailable)
	for _, winning := range []string{PBXWins, TeamsWins} {
		c, q := newComposer(t, filepath.Join(t.TempDir(), "s.db"), states{upn: available}, clock.NewFake(t0))
		c.o.Winning = winning
		u := users.User{UPN: upn, Account: "main"}
		call := presence.PBXState{UPN: upn, Line: presence.LineInCall, Calls: 1, Changed: t0}
		idle := presence.PBXState{UPN: upn, Line: presence.LineIdle, Changed: t0}
		_ = c.DeliverPBX(context.Background(), []presence.PBXChange{{User: u, Current: idle}})
		if got := q.take(); len(got) != 0 {
			t.Fatalf("%s: an idle phone queued %+v", winning, got)
		}
		_ = c.DeliverPBX(context.Background(), []presence.PBXChange{{User: u, Previous: idle, Current: call}})
		_ = c.DeliverPBX(context.Background(), []presence.PBXChange{{User: u, Previous: call, Current: idle}})
		got := q.take()
		if winning == TeamsWins {
			if len(got) != 0 {
				t.Fatalf("MSTeams with Teams read: the PBX's call queued %+v", got)
			}
			continue
		}
		if len(got) != 2 || got[0].Mapped.State != "oncall" || got[1].Mapped.State != "available" || got[1].Source != delivery.SourceTeams {
			t.Fatalf("SipSimple: a call and its end queued %+v", got)
		}
	}
}
