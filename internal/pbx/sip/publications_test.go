package sip

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
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
		// A dialog publication keeps the dialog column and its version.
		d := p
		d.Shows.Dialog, d.Version = "early", 1<<40+3
		if got, err := decodePublication(encodePublication(d)); err != nil || got != d {
			t.Fatalf("read back %+v, %v\nwant %+v", got, err, d)
		}
		// The record the release before Event: dialog wrote (version 1).
		v1 := store.NewRecord(1, 96).Str(p.ETag).Time(p.Expires).Int(int64(p.Lifetime)).Str(p.Transport).Str(p.Dest).
			Str(m.State).Str(m.Basic).Str(m.Activity).Str(m.Note).Bytes()
		if got, err := decodePublication(v1); err != nil || got != p {
			t.Fatalf("a version 1 record read as %+v, %v\nwant %+v", got, err, p)
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

// The bucket keeps a presence publication under the SIP URI, as every release
// did, and a dialog publication under "dialog " and the URI; both read back,
// and a file the release before wrote (URI keys, version 1 records) reads as
// presence publications.
func TestPublicationKeys(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	uri := "sip:1001@pbx.example"
	old := store.NewRecord(1, 96).Str("old-tag").Time(time.Now()).Int(int64(time.Hour)).Str("udp").Str("127.0.0.1:5060").
		Str("busy").Str("open").Str("busy").Str("Busy").Bytes()
	if err := db.PutRaw(store.BucketSIPPubs, "sip:1000@pbx.example", old); err != nil {
		t.Fatal(err)
	}
	s := BoltPublications(db)
	pres := Publication{ETag: "p-tag", Shows: presence.Mapped{State: "oncall", Basic: "open"}, Transport: "udp", Dest: "127.0.0.1:5060"}
	dlg := Publication{ETag: "d-tag", Shows: presence.Mapped{State: "oncall", Basic: "open"}, Version: 9, Transport: "udp", Dest: "127.0.0.1:5060"}
	if err := s.SavePublications(map[Key]*Publication{pk(uri): &pres, dk(uri): &dlg}); err != nil {
		t.Fatal(err)
	}
	if raw, _ := db.GetRaw(store.BucketSIPPubs, uri); raw == nil {
		t.Error("the presence publication is not under the bare SIP URI")
	}
	if raw, _ := db.GetRaw(store.BucketSIPPubs, "dialog "+uri); raw == nil {
		t.Error(`the dialog publication is not under "dialog <SIP URI>"`)
	}
	got, err := s.LoadPublications()
	if err != nil || len(got) != 3 || got[pk(uri)].ETag != "p-tag" || got[dk(uri)].ETag != "d-tag" || got[dk(uri)].Version != 9 ||
		got[pk("sip:1000@pbx.example")].ETag != "old-tag" {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	if err := s.SavePublications(map[Key]*Publication{dk(uri): nil}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LoadPublications(); len(got) != 2 || got[pk(uri)].ETag != "p-tag" {
		t.Errorf("after deleting the dialog publication: %+v", got)
	}
}
