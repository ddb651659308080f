package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/sipua"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// Both directions at once against the real Asterisk: a real call between two
// registered phones turns both users Busy/InACall in Teams (setPresence with
// the app's session), the CTI is shown the PBX's state (SipSimple), and the
// hang-up gives Teams and the CTI the users' own Available back, with no
// write or document going round in a loop. A third user, whom Asterisk does
// not know, is reported and the others carry on.
func TestIntegrationCallsIntoTeamsAsterisk(t *testing.T) {
	testkit.Need(t, "the Asterisk integration test", asterisk.Find)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pbx, err := asterisk.Start(ctx, asterisk.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pbx.Stop() })
	sim := testkit.StartSim(t, graphsim.Options{Users: 3})
	us := sim.Users()
	for _, u := range us {
		if _, err := sim.SetPresence(u.UPN, "Available", "Available"); err != nil {
			t.Fatal(err)
		}
	}
	crm := newRecordingCTI(t)
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100,
		Extra: httpSection(crm.srv.URL) + fmt.Sprintf("[SIP]\nServer = %s\nUsername = %s\nPassword = %s\n[PBX]\nWatch = dialog\n",
			pbx.SIPAddr, pbx.Subscriber, pbx.SubscriberPassword)})
	// The users file names sip:1000@pbx.example and up, Asterisk's extensions.
	r := startWith(t, path, func(cfg *config.Config) { cfg.WinningTechnology = config.WinningSipSimple })

	anna, bob, carl := us[0].UPN, us[1].UPN, us[2].UPN
	shows := func(upn string) string { a, act, _ := sim.Presence(upn); return a + "/" + act }
	waitFor(t, "both phones' hints watched and the third refused", func() bool {
		st := r.app.report().PBXWatch
		return st != nil && st.Subscribed == 2 && st.Failed == 1
	}, r)
	waitFor(t, "the CTI shown every user from Teams", func() bool {
		last, _ := crm.last("")
		return last[anna].State == "available" && last[bob].State == "available"
	}, r)

	ph := map[string]*sipua.Phone{}
	for _, ext := range []string{"1000", "1001"} {
		p, err := sipua.New(ctx, sipua.Options{Server: pbx.SIPAddr, User: ext, Domain: pbx.Domain, Password: pbx.Users[ext]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := p.Register(ctx); err != nil {
			t.Fatal(err)
		}
		ph[ext] = p
	}
	call, err := ph["1000"].Call(ctx, pbx.URI("1001"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both in a call in Teams", func() bool {
		return shows(anna) == "Busy/InACall" && shows(bob) == "Busy/InACall"
	}, r)
	waitFor(t, "the CTI shown the PBX's call", func() bool {
		last, _ := crm.last("")
		return last[anna].State == "oncall" && last[anna].Source == delivery.SourcePBX && last[anna].PBX != nil &&
			last[bob].State == "oncall" && last[bob].Source == delivery.SourcePBX
	}, r)
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both back to their own Available in Teams", func() bool {
		return shows(anna) == "Available/Available" && shows(bob) == "Available/Available"
	}, r)
	waitFor(t, "the CTI shown Teams again", func() bool {
		last, _ := crm.last("")
		return last[anna].State == "available" && last[anna].Source == delivery.SourceTeams &&
			last[bob].State == "available" && last[bob].Source == delivery.SourceTeams
	}, r)
	// Three poll cycles later nothing more happened: no loop.
	time.Sleep(3500 * time.Millisecond)
	var sets, clears int
	for _, w := range sim.Writes() {
		if !w.Accepted() {
			t.Errorf("a write was refused: %+v", w)
		}
		switch w.Op {
		case graphsim.OpSetPresence:
			sets++
		case graphsim.OpClearPresence:
			clears++
		}
	}
	if sets != 2 || clears != 2 {
		t.Errorf("%d setPresence and %d clearPresence for one call of two users; want 2 and 2", sets, clears)
	}
	if shows(carl) != "Available/Available" {
		t.Errorf("the user Asterisk does not know shows %s", shows(carl))
	}
	rep := r.app.report()
	if w := rep.Accounts[0].Writes; w == nil || w.Counts.Set != 2 || w.Counts.Cleared != 2 || w.Held != 0 {
		t.Errorf("writes status %+v", rep.Accounts[0].Writes)
	}
	if n := r.logs.Count("refuses to let presencebridge watch"); n != 1 {
		t.Errorf("the refused user was logged %d times; want once", n)
	}
}
