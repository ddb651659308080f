package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
)

// Teams -> presencebridge -> Kamailio with [SIP] Event = both: a Teams call
// lights the user's BLF key (an independent Event: dialog watcher sees a
// confirmed dialog) and shows in PIDF (an Event: presence watcher sees "In a
// call"). After a restart of presencebridge the call's end puts the key out,
// as a modification of the same dialog publication: its entity tag and
// dialog-info version were kept in the state file, beside the presence
// publication's.
func TestDeliveryDialogAndPresenceToKamailio(t *testing.T) {
	k := pbxtest.Kamailio(t, kamailio.Options{Users: map[string]string{"pb": "s3cret"}})
	sim, path := deliveryTenant(t, "")
	raw, _ := os.ReadFile(path)
	ini := strings.Replace(string(raw), "[Delivery]", fmt.Sprintf("[SIP]\nServer = %s\nEvent = both\nUsername = pb\nPassword = s3cret\n[Delivery]", k.UDP), 1)
	os.WriteFile(path, []byte(ini), 0o600)

	upn, uri := sim.Users()[2].UPN, "sip:1002@pbx.example" // the users file's SIP URI of user 2
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	blf, err := kamailio.WatchEvent(ctx, k.UDP, uri, "dialog")
	if err != nil {
		t.Fatal(err)
	}
	defer blf.Close()
	console, err := kamailio.Watch(ctx, k.UDP, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	wait := func(r *running, w *kamailio.Watcher, what string, match func(kamailio.Notify) bool) {
		t.Helper()
		if _, err := w.WaitFor(ctx, match); err != nil {
			t.Fatalf("%s: %v\nlog:\n%s\nkamailio:\n%s", what, err, r.logs.String(), k.LogTail(20))
		}
	}
	lit := kamailio.Notify.Confirmed
	out := func(n kamailio.Notify) bool { return n.Raw != "" && !n.Confirmed() }

	r := startWith(t, path, func(c *config.Config) {
		if c.SIP.Event != sip.EventBoth {
			t.Fatalf("[SIP] Event = both loaded as %q", c.SIP.Event)
		}
	})
	waitFor(t, "every user published", func() bool {
		return r.app.Pending("sip") == 0 && r.app.Status(ctx).(StatusReport).Targets[0].Sent == 10
	}, r)
	if _, err := sim.SetPresence(upn, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	wait(r, blf, "the BLF key lit for the Teams call", lit)
	wait(r, console, "the console showing the call", func(n kamailio.Notify) bool { return n.Note == "In a call" })
	r.stop()

	r = startWith(t, path, nil)
	if _, err := sim.SetPresence(upn, "Available", "Available"); err != nil {
		t.Fatal(err)
	}
	wait(r, console, "the console showing Available", func(n kamailio.Notify) bool { return n.Note == "Available" })
	wait(r, blf, "the BLF key out after the call, after the restart", out)
	r.stop()
	if strings.Contains(r.logs.String(), "s3cret") {
		t.Error("the SIP password reached the log")
	}

	db, err := store.Open(r.app.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pubs, err := sip.BoltPublications(db).LoadPublications()
	if err != nil {
		t.Fatal(err)
	}
	pres, dlg := pubs[sip.Key{URI: uri, Event: sip.EventPresence}], pubs[sip.Key{URI: uri, Event: sip.EventDialog}]
	if pres.ETag == "" || dlg.ETag == "" || pres.ETag == dlg.ETag || dlg.Version < 2 || len(pubs) != 20 {
		t.Errorf("kept %d publications; %s: presence %+v, dialog %+v; want 20, two with their own entity tags, the dialog's at version 2 or later",
			len(pubs), uri, pres, dlg)
	}
}
