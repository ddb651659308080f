package delivery

import (
	"encoding/json"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// The outbox's records (see store.Record). The key holds the target and the UPN,
// so neither is stored again; the Seq comes first, where a settle reads it.
//
//	version 1, pending item: seq, reason, queued, user, state, mapped
//	version 1, delivered:    the same, then at
//
//	version 2: version 1's fields, then mapped's dialog and device state, pbx and source (before a delivered at)
//
// user: SIP URI, extension, name, account, line; state: has-state, availability,
// activity, out of office, seen, changed; mapped: state, basic, activity, note;
// pbx: line, dnd, away, calls, changed.
const (
	recordV1 = 1
	recordV2 = 2
)

func appendItem(r *store.Record, it Item) *store.Record {
	r.Uint(it.Seq).Str(it.Reason).Time(it.Queued)
	u := it.User
	r.Str(u.SIPURI).Str(u.Extension).Str(u.Name).Str(u.Account).Uint(uint64(max(u.Line, 0)))
	s := it.State
	r.Bool(s.UPN != "").Str(string(s.Availability)).Str(string(s.Activity)).Bool(s.OutOfOffice).Time(s.Seen).Time(s.Changed)
	m := it.Mapped
	r.Str(m.State).Str(m.Basic).Str(m.Activity).Str(m.Note)
	r.Str(m.Dialog).Str(m.DeviceState)
	p := it.PBX
	return r.Str(string(p.Line)).Bool(p.DND).Bool(p.Away).Uint(uint64(max(p.Calls, 0))).Time(p.Changed).Str(it.Source)
}

func readItem(r *store.Reader, upn string) Item {
	it := Item{Seq: r.Uint(), Reason: r.Str(), Queued: r.Time()}
	it.User = users.User{UPN: upn, SIPURI: r.Str(), Extension: r.Str(), Name: r.Str(), Account: r.Str(), Line: int(r.Uint())}
	if r.Bool() {
		it.State.UPN = upn
	}
	it.State.Availability, it.State.Activity = presence.Availability(r.Str()), presence.Activity(r.Str())
	it.State.OutOfOffice, it.State.Seen, it.State.Changed = r.Bool(), r.Time(), r.Time()
	it.Mapped = presence.Mapped{State: r.Str(), Basic: r.Str(), Activity: r.Str(), Note: r.Str()}
	if r.Version() >= recordV2 {
		it.Mapped.Dialog, it.Mapped.DeviceState = r.Str(), r.Str()
		it.PBX = presence.PBXState{Line: presence.Line(r.Str()), DND: r.Bool(), Away: r.Bool(), Calls: int(r.Uint()), Changed: r.Time()}
		if it.PBX.Known() {
			it.PBX.UPN = upn
		}
		it.Source = r.Str()
	}
	return it
}

func encodeItem(it Item) []byte {
	return appendItem(store.NewRecord(recordV2, 104), it).Bytes()
}

// decodeItem reads a pending item of upn, compact or (from an older release) JSON.
func decodeItem(upn string, raw []byte) (Item, error) {
	if store.IsJSON(raw) {
		var it Item
		err := json.Unmarshal(raw, &it)
		return it, err
	}
	r := store.ReadRecord(raw)
	it := readItem(r, upn)
	return it, r.Err()
}

// pendingSeq is the Seq of a stored pending item, without decoding the rest.
func pendingSeq(raw []byte) (uint64, error) {
	if store.IsJSON(raw) {
		var s struct {
			Seq uint64 `json:"seq"`
		}
		err := json.Unmarshal(raw, &s)
		return s.Seq, err
	}
	r := store.ReadRecord(raw)
	seq := r.Uint()
	return seq, r.Err()
}

func encodeDelivered(d Delivered) []byte {
	it := Item{User: d.User, State: d.State, Mapped: d.Mapped, PBX: d.PBX, Source: d.Source, Reason: d.Reason, Seq: d.Seq, Queued: d.Queued}
	return appendItem(store.NewRecord(recordV2, 112), it).Time(d.At).Bytes()
}

// decodeDelivered reads what target last accepted for upn, compact or JSON.
func decodeDelivered(target, upn string, raw []byte) (Delivered, error) {
	if store.IsJSON(raw) {
		var d Delivered
		err := json.Unmarshal(raw, &d)
		return d, err
	}
	r := store.ReadRecord(raw)
	it := readItem(r, upn)
	d := Delivered{Target: target, UPN: upn, User: it.User, Mapped: it.Mapped, State: it.State, PBX: it.PBX, Source: it.Source, Reason: it.Reason,
		Seq: it.Seq, Queued: it.Queued, At: r.Time()}
	return d, r.Err()
}

// Rewrite is how the outbox's buckets are rewritten compact when the state file
// is upgraded (store.Rewrite): JSON records of an older release become records.
func Rewrite(bucket string, key, val []byte) ([]byte, error) {
	if !store.IsJSON(val) {
		return val, nil
	}
	upn := upnOf(key)
	switch bucket {
	case store.BucketOutbox:
		it, err := decodeItem(upn, val)
		return encodeItem(it), err
	case store.BucketDelivered:
		d, err := decodeDelivered("", upn, val)
		return encodeDelivered(d), err
	}
	return val, nil
}
