package delivery

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// Items and deliveries read back as written, in the compact records and from
// the JSON an older release wrote; the records are a fraction of the JSON.
func TestRecords(t *testing.T) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 123456789, time.UTC)
	u := users.User{UPN: "jürgen@contoso.com", SIPURI: "sip:1001@pbx.example", Extension: "1001", Name: "Jürgen Müller", Account: "eu", Line: 7}
	st := presence.State{UPN: u.UPN, Availability: presence.Busy, Activity: presence.ActInACall, OutOfOffice: true, Seen: at, Changed: at.Add(-time.Minute)}
	items := []Item{
		{User: u, State: st, Mapped: presence.DefaultMapping().Map(st), Reason: ReasonChange, Seq: 42, Queued: at},
		{User: users.User{UPN: u.UPN, Extension: "1"}, Mapped: presence.DefaultMapping().Stale(), Reason: ReasonStale, Seq: 1 << 40},
		{User: u, State: st, Mapped: presence.Mapped{State: "oncall", Basic: "open", Dialog: "early", DeviceState: "RINGING"}, Reason: ReasonPBX, Seq: 43, Queued: at, Source: SourcePBX,
			PBX: presence.PBXState{UPN: u.UPN, Line: presence.LineInCall, DND: true, Calls: 2, Changed: at}},
	}
	for _, it := range items {
		raw := encodeItem(it)
		got, err := decodeItem(u.UPN, raw)
		if err != nil || !reflect.DeepEqual(got, it) {
			t.Fatalf("item read back as %+v, %v\nwant %+v", got, err, it)
		}
		if seq, err := pendingSeq(raw); err != nil || seq != it.Seq {
			t.Errorf("pendingSeq = %d, %v", seq, err)
		}
		js, _ := json.Marshal(it)
		if old, err := decodeItem(u.UPN, js); err != nil || !reflect.DeepEqual(old, it) {
			t.Errorf("an older release's JSON read as %+v, %v", old, err)
		}
		if len(raw)*3 > len(js) {
			t.Errorf("record %d bytes, JSON %d: want under a third", len(raw), len(js))
		}
		d := Delivered{Target: "http", UPN: u.UPN, User: it.User, Mapped: it.Mapped, State: it.State, PBX: it.PBX, Source: it.Source,
			Reason: it.Reason, Seq: it.Seq, Queued: it.Queued, At: at}
		if got, err := decodeDelivered("http", u.UPN, encodeDelivered(d)); err != nil || !reflect.DeepEqual(got, d) {
			t.Fatalf("delivered read back as %+v, %v\nwant %+v", got, err, d)
		}
	}
	if _, err := decodeItem(u.UPN, encodeItem(items[0])[:20]); err == nil {
		t.Error("a record cut short reads without an error")
	}
	// A version 1 record (before the PBX was an input) reads with no PBX state.
	v1 := store.NewRecord(recordV1, 96).Uint(7).Str(ReasonChange).Time(at)
	v1.Str(u.SIPURI).Str(u.Extension).Str(u.Name).Str(u.Account).Uint(7)
	v1.Bool(true).Str("Busy").Str("InACall").Bool(false).Time(at).Time(at)
	v1.Str("oncall").Str("open").Str("on-the-phone").Str("In a call")
	got, err := decodeItem(u.UPN, v1.Bytes())
	if err != nil || got.Seq != 7 || got.Mapped.State != "oncall" || got.PBX.Known() || got.Source != "" {
		t.Errorf("a version 1 record read as %+v, %v", got, err)
	}
	dv1 := append(v1.Bytes(), store.NewRecord(0, 8).Time(at).Bytes()[1:]...)
	if d, err := decodeDelivered("http", u.UPN, dv1); err != nil || !d.At.Equal(at) {
		t.Errorf("a version 1 delivered record read as %+v, %v", d, err)
	}
}
