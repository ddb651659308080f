package sip

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// A publication reads back as written; one an older release kept as JSON, with
// its PIDF body, reads back with the state the body shows.
func TestPublicationRecords(t *testing.T) {
	uri := "sip:1001@pbx.example"
	for _, m := range []presence.Mapped{
		presence.DefaultMapping().Map(presence.State{Availability: presence.Busy, Activity: presence.ActInACall}),
		presence.DefaultMapping().Map(presence.State{Availability: presence.Available, Activity: presence.ActAvailable}),
		{State: "x", Basic: "closed", Activity: "Lunch & coffee", Note: "Zurück um 2 <bald>"},
	} {
		p := Publication{ETag: "etag-7", Expires: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC), Lifetime: time.Hour,
			Shows: m, Transport: "udp", Dest: "127.0.0.1:5060"}
		got, err := decodePublication(encodePublication(p))
		if err != nil || got != p {
			t.Fatalf("read back %+v, %v\nwant %+v", got, err, p)
		}
		old, _ := json.Marshal(map[string]any{"etag": p.ETag, "expires": p.Expires, "lifetime": p.Lifetime,
			"body": PIDF(uri, m), "transport": p.Transport, "dest": p.Dest})
		got, err = decodePublication(old)
		want := p
		want.Shows.State = "" // not in a PIDF
		if err != nil || got != want || string(PIDF(uri, got.Shows)) != string(PIDF(uri, m)) {
			t.Fatalf("an older release's record read as %+v, %v\nwant %+v", got, err, want)
		}
		if n, o := len(encodePublication(p)), len(old); n*4 > o {
			t.Errorf("record %d bytes, older JSON %d: want under a quarter", n, o)
		}
	}
}
