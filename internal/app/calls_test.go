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
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// Both directions at once against the real Asterisk: a real call between two
// registered phones turns both users Busy/InACall in Teams (setPresence with
// the app's session), the CTI is shown the PBX's state (SipSimple), and the
// hang-up gives Teams and the CTI the users' own Available back, with no
// write or document going round in a loop. A third user, whom Asterisk does
// not know, is reported and the others carry on.
func TestIntegrationCallsIntoTeamsAsterisk(t *testing.T) {
	pbx := pbxtest.Asterisk(t, asterisk.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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

	ph := pbxtest.Phones(t, pbx.SIPAddr, pbx.Domain, pbx.Users, "1000", "1001")
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

// Both directions at once against the same Kamailio, a small PBX that is also
// the SIP presence server presencebridge publishes to: a real call turns the
// caller and callee Busy/InACall in Teams and the hang-up restores what each
// showed before (Away, Available), while a Teams change of a third user still
// reaches the PBX's presence watchers during the call. With Watch = both the
// watch also reads the PBX's presence documents, which carry presencebridge's
// own publications: those are not taken for the PBX's state (no loop).
func TestIntegrationCallsIntoTeamsKamailio(t *testing.T) {
	pbx := pbxtest.Kamailio(t, kamailio.Options{PBX: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim := testkit.StartSim(t, graphsim.Options{Users: 3})
	us := sim.Users()
	anna, bob, carl := us[0].UPN, us[1].UPN, us[2].UPN
	for upn, st := range map[string]string{anna: "Away", bob: "Available", carl: "Available"} {
		if _, err := sim.SetPresence(upn, st, st); err != nil {
			t.Fatal(err)
		}
	}
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100,
		Extra: fmt.Sprintf("[SIP]\nServer = %s\n[PBX]\nWatch = both\n", pbx.UDP)})
	r := startWith(t, path, nil)
	shows := func(upn string) string { a, act, _ := sim.Presence(upn); return a + "/" + act }
	waitFor(t, "every user watched", func() bool {
		st := r.app.report().PBXWatch
		return st != nil && st.Subscribed == 3
	}, r)
	carlWatch, err := kamailio.Watch(ctx, pbx.UDP, "sip:1002@"+pbx.Domain)
	if err != nil {
		t.Fatal(err)
	}
	defer carlWatch.Close()
	if _, err := carlWatch.WaitFor(ctx, func(n kamailio.Notify) bool { return n.Note == "Available" }); err != nil {
		t.Fatalf("carl's Teams state never reached the PBX: %v", err)
	}

	ph := pbxtest.Phones(t, pbx.UDP, pbx.Domain, nil, "1000", "1001")
	call, err := ph["1000"].Call(ctx, "sip:1001@"+pbx.Domain)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both in a call in Teams", func() bool {
		return shows(anna) == "Busy/InACall" && shows(bob) == "Busy/InACall"
	}, r)
	// Meanwhile the other direction: carl's Teams change reaches the PBX.
	if _, err := sim.SetPresence(carl, "DoNotDisturb", "DoNotDisturb"); err != nil {
		t.Fatal(err)
	}
	if _, err := carlWatch.WaitFor(ctx, func(n kamailio.Notify) bool { return n.Note == "Do not disturb" }); err != nil {
		t.Fatalf("carl's change during the call never reached the PBX: %v", err)
	}
	if err := call.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "each back to what they showed before the call", func() bool {
		return shows(anna) == "Away/Away" && shows(bob) == "Available/Available"
	}, r)
	time.Sleep(3500 * time.Millisecond) // three poll cycles: nothing more may happen
	var sets, clears int
	for _, w := range sim.Writes() {
		switch w.Op {
		case graphsim.OpSetPresence:
			sets++
		case graphsim.OpClearPresence:
			clears++
		}
	}
	if sets != 2 || clears != 2 || shows(carl) != "DoNotDisturb/DoNotDisturb" {
		t.Errorf("%d setPresence and %d clearPresence (want 2 and 2); carl shows %s", sets, clears, shows(carl))
	}
	if st := r.app.report().PBXWatch; st.InCall != 0 || st.Failed != 0 {
		t.Errorf("watch status %+v", st)
	}
}
