package graph

import (
	"context"
	"fmt"
	"testing"
)

func TestSequenceNumberDecoded(t *testing.T) {
	sim, c := newSim(t, 5)
	ctx := context.Background()
	u := sim.Users()[1]
	if _, err := sim.SetPresence(u.UPN, "Away", "Away"); err != nil {
		t.Fatal(err)
	}
	older, _ := sim.SequenceNumber(u.UPN)
	if _, err := sim.SetPresence(u.UPN, "Busy", "InACall"); err != nil {
		t.Fatal(err)
	}
	cur, _ := sim.SequenceNumber(u.UPN)
	ps, err := c.GetPresences(ctx, []string{sim.Users()[0].ID, u.ID})
	if err != nil || len(ps) != 2 || ps[1].SequenceNumber != cur || ps[0].SequenceNumber == "" {
		t.Fatalf("GetPresences: %+v, %v; want sequenceNumber %s", ps, err, cur)
	}
	if _, err := sim.ServeStale(u.UPN); err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPresence(ctx, u.ID)
	if err != nil || p.SequenceNumber != older || p.Availability != "Away" || !(p.SequenceNumber < cur) {
		t.Fatalf("the stale read: %+v, %v; want Away with %s, below %s", p, err, older, cur)
	}
}

// The client reads Graph's presence replies on its fast path (and the fuzz
// target checks that it reads them as encoding/json does).
func TestPresenceRepliesTakeTheFastPath(t *testing.T) {
	for name, body := range map[string][]byte{"documented": []byte(presenceReplyDoc), "full": fullPresenceReply()} {
		var r presenceReply
		if !r.decodeFast(body) {
			t.Errorf("%s reply: not read by the fast path", name)
		}
	}
	var r presenceReply
	if !r.decodeFast([]byte(presenceReplyDoc)) || fmt.Sprint(r.presences()) !=
		"[{fa8bf3dc-eca7-46b7-bad1-db199b62afc3 Busy InAMeeting false C2D2C58A6D58D4DB} {66825e03-7ef5-42da-9069-724602c31f6b Away Away true }]" {
		t.Errorf("documented reply: %+v", r.presences())
	}
}
