package app

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// Teams to the real Asterisk through the whole service: [Asterisk] over ARI
// turns the hint of a user in a Teams call busy for a BLF watcher and idle
// after; status, presence get and sync-all include the target.
func TestIntegrationTeamsToAsteriskHints(t *testing.T) {
	pbx := pbxtest.Asterisk(t, asterisk.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim := testkit.StartSim(t, graphsim.Options{Users: 2})
	us := sim.Users()
	for _, u := range us {
		if _, err := sim.SetPresence(u.UPN, "Available", "Available"); err != nil {
			t.Fatal(err)
		}
	}
	// The users file gives extensions 1000 and 1001, the harness's phones.
	path := testkit.WriteSimConfig(t, sim, testkit.SimConfig{Interval: time.Second, ResolveRate: 100,
		Extra: fmt.Sprintf("[Asterisk]\nURL = %s\nUsername = %s\nPassword = %s\n", pbx.ARIURL, pbx.ARIUser, pbx.ARIPassword)})
	r := startWith(t, path, nil)
	anna := us[0].UPN

	w, err := kamailio.WatchEvent(ctx, pbx.SIPAddr, pbx.URI("1000"), "dialog")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	lamp := func(what string, busy bool) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := w.WaitFor(wctx, func(n kamailio.Notify) bool { return n.Confirmed() == busy && len(n.DialogStates) > 0 }); err != nil {
			t.Logf("log:\n%s", r.logs.String())
			t.Fatalf("BLF watcher of 1000: no NOTIFY %s: %v", what, err)
		}
	}
	sent := func(n int) bool { st := r.app.report().Targets; return len(st) == 1 && st[0].Sent == n }
	waitFor(t, "both users' first states accepted by Asterisk", func() bool { return sent(2) }, r)
	lamp("idle while Teams says Available", false)
	if _, err := sim.SetPresence(anna, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	lamp("busy while Teams says in a call", true)
	waitFor(t, "the call accepted by Asterisk", func() bool { return sent(3) }, r)

	rep, err := r.app.Presence(ctx, anna)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Asterisk == nil || rep.Asterisk.Device != "Stasis:teams-1000" || rep.Asterisk.State != "INUSE" || rep.Asterisk.Error != "" {
		t.Errorf("presence get's asterisk: %+v", rep.Asterisk)
	}
	if !slices.ContainsFunc(rep.Delivered, func(d delivery.Delivered) bool { return d.Target == "asterisk" && d.Mapped.Device() == "INUSE" }) {
		t.Errorf("presence get's delivered: %+v", rep.Delivered)
	}
	st := r.app.report()
	if len(st.Targets) != 1 || st.Targets[0].Name != "asterisk" || st.Targets[0].Sent < 3 || st.Targets[0].Down {
		t.Errorf("status targets: %+v", st.Targets)
	}
	sync, err := r.app.SyncAll(ctx)
	if err != nil || !slices.Contains(sync.Targets, "asterisk") || sync.Queued != 2 {
		t.Errorf("sync-all: %+v, %v", sync, err)
	}
	if _, err := sim.SetPresence(anna, "Available", "Available"); err != nil {
		t.Fatal(err)
	}
	lamp("idle once the Teams call ended", false)
	if strings.Contains(r.logs.String(), pbx.ARIPassword) {
		t.Errorf("the log shows the ARI password")
	}
}
