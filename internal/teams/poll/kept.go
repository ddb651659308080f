package poll

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
)

// The poller owns two buckets of the state file, keyed by UPN, with compact
// records (store.Record); the UPN is the key and not stored again.
//
//	store.BucketPresence, version 1: availability, activity, out of office, seen, changed
//	store.BucketUserIDs,  version 1: object id, resolved at, not found
//
// Others read the kept states through Kept.
const recordV1 = 1

func encodeState(s presence.State) []byte {
	return store.NewRecord(recordV1, 32).Str(string(s.Availability)).Str(string(s.Activity)).Bool(s.OutOfOffice).
		Time(s.Seen).Time(s.Changed).Bytes()
}

// decodeState reads upn's kept state, compact or (from an older release) JSON.
func decodeState(upn string, raw []byte) (presence.State, error) {
	if store.IsJSON(raw) {
		var s presence.State
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	r := store.ReadRecord(raw)
	s := presence.State{UPN: upn, Availability: presence.Availability(r.Str()), Activity: presence.Activity(r.Str()),
		OutOfOffice: r.Bool(), Seen: r.Time(), Changed: r.Time()}
	return s, r.Err()
}

// resolved is what BucketUserIDs keeps per UPN.
type resolved struct {
	ID         string    `json:"id"`
	UPN        string    `json:"upn"`
	ResolvedAt time.Time `json:"resolvedAt"`
	NotFound   bool      `json:"notFound,omitempty"`
}

func encodeResolved(r resolved) []byte {
	return store.NewRecord(recordV1, 48).Str(r.ID).Time(r.ResolvedAt).Bool(r.NotFound).Bytes()
}

func decodeResolved(upn string, raw []byte) (resolved, error) {
	if store.IsJSON(raw) {
		var r resolved
		err := json.Unmarshal(raw, &r)
		return r, err
	}
	rd := store.ReadRecord(raw)
	r := resolved{ID: rd.Str(), UPN: upn, ResolvedAt: rd.Time(), NotFound: rd.Bool()}
	return r, rd.Err()
}

// Rewrite is how the poller's buckets are rewritten compact when the state file
// is upgraded (store.Rewrite): JSON records of an older release become records.
func Rewrite(bucket string, key, val []byte) ([]byte, error) {
	if !store.IsJSON(val) {
		return val, nil
	}
	switch bucket {
	case store.BucketPresence:
		s, err := decodeState(string(key), val)
		return encodeState(s), err
	case store.BucketUserIDs:
		r, err := decodeResolved(string(key), val)
		return encodeResolved(r), err
	}
	return val, nil
}

// loadKept reads, in one transaction, the object id and (with states set) the
// last state kept of each of upns.
func loadKept(db *store.DB, upns []string, states bool) (map[string]string, map[string]presence.State, error) {
	ids := make(map[string]string, len(upns))
	kept := map[string]presence.State{}
	err := db.View(func(tx *bolt.Tx) error {
		idb, pb := tx.Bucket([]byte(store.BucketUserIDs)), tx.Bucket([]byte(store.BucketPresence))
		for _, upn := range upns {
			if raw := idb.Get([]byte(upn)); raw != nil {
				r, err := decodeResolved(upn, raw)
				if err != nil {
					return fmt.Errorf("resolved id of %s: %w", upn, err)
				}
				if !r.NotFound && r.ID != "" {
					ids[upn] = r.ID
				}
			}
			if !states {
				continue
			}
			if raw := pb.Get([]byte(upn)); raw != nil {
				s, err := decodeState(upn, raw)
				if err != nil {
					return fmt.Errorf("kept state of %s: %w", upn, err)
				}
				s.UPN = upn // the users list's string, not a copy per user
				kept[upn] = s
			}
		}
		return nil
	})
	return ids, kept, err
}

// Kept reads the last Teams state the poller kept for each user.
func Kept(db *store.DB) KeptStates { return KeptStates{db} }

// KeptStates is the poller's record of the users' last Teams states.
type KeptStates struct{ db *store.DB }

// Last is upn's last Teams state, if one was read.
func (k KeptStates) Last(upn string) (presence.State, bool, error) {
	raw, err := k.db.GetRaw(store.BucketPresence, upn)
	if err != nil || raw == nil {
		return presence.State{}, false, err
	}
	s, err := decodeState(upn, raw)
	if err != nil {
		return s, false, fmt.Errorf("kept state of %s: %w", upn, err)
	}
	return s, true, nil
}

// ID is upn's Graph object id, if the poller resolved it.
func (k KeptStates) ID(upn string) (string, bool, error) {
	raw, err := k.db.GetRaw(store.BucketUserIDs, upn)
	if err != nil || raw == nil {
		return "", false, err
	}
	r, err := decodeResolved(upn, raw)
	if err != nil {
		return "", false, fmt.Errorf("kept object id of %s: %w", upn, err)
	}
	return r.ID, r.ID != "" && !r.NotFound, nil
}
