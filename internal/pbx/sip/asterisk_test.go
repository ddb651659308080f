package sip_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/testkit/pbxtest"
	"github.com/presencebridge/presencebridge/internal/users"
)

// The real Asterisk 22 takes no PUBLISH of presence or dialog state (489 Bad
// Event, res_pjsip_pubsub's "No registered publish handler"), after digest
// authentication of presencebridge's endpoint: each is refused for good with
// the way out, [SIP] Event = dialog for a presence server serving BLF keys,
// and the [Asterisk] target for Asterisk and FreePBX.
func TestIntegrationAsteriskRefusesPublish(t *testing.T) {
	ast := pbxtest.Asterisk(t, asterisk.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for event, want := range map[string][]string{
		sip.EventPresence: {": 489 ", "takes no presence publications (Event: presence)", "switch to [SIP] Event = dialog", "switch to the [Asterisk] target"},
		sip.EventDialog:   {" (Event: dialog): 489 ", "takes no dialog publications", "switch to the [Asterisk] target"},
	} {
		t.Run(event, func(t *testing.T) {
			s := sip.DefaultSettings()
			s.Server, s.Event, s.Timeout = ast.SIPAddr, event, 2*time.Second
			s.From = "sip:" + ast.Subscriber + "@" + ast.Domain
			s.Username, s.Password = ast.Subscriber, secret.Value(ast.SubscriberPassword)
			p, err := sip.New(sip.Options{Settings: s, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			st := presence.State{UPN: "anna@contoso.test", Availability: presence.Busy, Activity: presence.ActInACall}
			it := delivery.Item{User: users.User{UPN: st.UPN, SIPURI: ast.URI("1000")}, State: st,
				Mapped: presence.DefaultMapping().Map(st), Reason: delivery.ReasonChange}
			err = p.Send(ctx, []delivery.Item{it})[0]
			var perm *delivery.PermanentError
			if !errors.As(err, &perm) {
				t.Fatalf("err = %v; want a refusal for good\n%s", err, ast.LogTail(20))
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), ast.SubscriberPassword) {
				t.Error("the error shows the password")
			}
		})
	}
}
