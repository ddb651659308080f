package push

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// The outbox keeps, per target and user, the newest state not yet accepted, in the
// state file: a restart or a long PBX outage loses nothing, and older pending
// states are overwritten (coalesced) instead of queued behind each other.

func outboxKey(target, upn string) []byte { return []byte(target + "\x00" + upn) }

func upnOf(key []byte) string {
	if i := bytes.IndexByte(key, 0); i >= 0 {
		return string(key[i+1:])
	}
	return string(key)
}

// enqueue stores items for every target in one transaction, each with the
// target's next sequence number.
func enqueue(db *store.DB, targets []string, accepts []func(users.User) bool, items []Item) error {
	return db.Update(func(tx *bolt.Tx) error {
		ob, sb := tx.Bucket([]byte(store.BucketOutbox)), tx.Bucket([]byte(store.BucketOutboxSeq))
		for ti, t := range targets {
			var seq uint64
			if v := sb.Get([]byte(t)); len(v) == 8 {
				seq = binary.BigEndian.Uint64(v)
			}
			for _, it := range items {
				if accepts[ti] != nil && !accepts[ti](it.User) {
					continue
				}
				seq++
				it.Seq = seq
				raw, err := json.Marshal(it)
				if err != nil {
					return err
				}
				if err := ob.Put(outboxKey(t, it.User.UPN), raw); err != nil {
					return err
				}
			}
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], seq)
			if err := sb.Put([]byte(t), b[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// pending is an item read from the outbox with the bytes it was stored as: the
// compare-and-delete after a Send matches those bytes, which carry the Seq.
type pending struct {
	Item
	raw []byte
}

// pick returns up to n pending items of target for which want(upn) is true. It
// starts after the key after (nil: at the beginning) and wraps round, so users
// late in key order are not starved by users whose state keeps changing; it
// returns the last key taken, for the next pick to start after.
func pick(db *store.DB, target string, n int, after []byte, want func(upn string) bool) ([]pending, []byte, error) {
	var out []pending
	last := after
	prefix := []byte(target + "\x00")
	err := db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(store.BucketOutbox)).Cursor()
		take := func(k, v []byte) error {
			if !want(upnOf(k)) {
				return nil
			}
			p := pending{raw: bytes.Clone(v)}
			if err := json.Unmarshal(v, &p.Item); err != nil {
				return fmt.Errorf("outbox entry %q: %w", k, err)
			}
			out = append(out, p)
			last = bytes.Clone(k)
			return nil
		}
		k, v := c.Seek(prefix)
		if after != nil {
			if k, v = c.Seek(after); bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Next() {
			if err := take(k, v); err != nil {
				return err
			}
		}
		if after == nil {
			return nil
		}
		for k, v = c.Seek(prefix); k != nil && bytes.Compare(k, after) <= 0 && len(out) < n; k, v = c.Next() {
			if err := take(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	return out, last, err
}

// settle records the outcome of one Send in one transaction: accepted items are
// removed unless a newer state replaced them meanwhile (compare-and-delete on the
// stored bytes, which carry the Seq) and remembered as delivered; dropped
// (permanently refused) items are removed the same way.
func settle(db *store.DB, target string, accepted []Delivered, acceptedRaw [][]byte, dropped []pending) error {
	return db.Update(func(tx *bolt.Tx) error {
		ob, db := tx.Bucket([]byte(store.BucketOutbox)), tx.Bucket([]byte(store.BucketDelivered))
		removeIfSame := func(upn string, raw []byte) error {
			k := outboxKey(target, upn)
			if bytes.Equal(ob.Get(k), raw) {
				return ob.Delete(k)
			}
			return nil
		}
		for i, d := range accepted {
			if err := removeIfSame(d.UPN, acceptedRaw[i]); err != nil {
				return err
			}
			raw, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if err := db.Put(outboxKey(target, d.UPN), raw); err != nil {
				return err
			}
		}
		for _, p := range dropped {
			if err := removeIfSame(p.User.UPN, p.raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// countPending counts target's pending items.
func countPending(db *store.DB, target string) int {
	n := 0
	prefix := []byte(target + "\x00")
	_ = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(store.BucketOutbox)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n
}

// delivered reads what target last accepted for upn.
func delivered(db *store.DB, target, upn string) (Delivered, bool) {
	var d Delivered
	found := false
	_ = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(store.BucketDelivered)).Get(outboxKey(target, upn)); v != nil {
			found = json.Unmarshal(v, &d) == nil
		}
		return nil
	})
	return d, found
}

// hasPending reports whether target has a state for upn not yet accepted.
func hasPending(db *store.DB, target, upn string) bool {
	found := false
	_ = db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket([]byte(store.BucketOutbox)).Get(outboxKey(target, upn)) != nil
		return nil
	})
	return found
}

// Shown returns, by UPN, what a target last accepted for each user the PBX shows:
// users whose last delivery (to any target) was not a removal.
func Shown(db *store.DB) (map[string]Delivered, error) {
	out := map[string]Delivered{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(store.BucketDelivered)).ForEach(func(k, v []byte) error {
			var d Delivered
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("delivered entry %q: %w", k, err)
			}
			if d.Reason != ReasonRemove {
				out[upnOf(k)] = d
			}
			return nil
		})
	})
	return out, err
}

// deliveredAfter returns up to n of target's delivered states that are not
// removals and were accepted by before, in key order after the key after
// (nil: from the start), skipping users with a pending state (it goes out anyway,
// and is newer); and the last key read, for the next call.
func deliveredAfter(db *store.DB, target string, after []byte, n int, before time.Time) ([]Delivered, []byte, error) {
	var out []Delivered
	last := after
	prefix := []byte(target + "\x00")
	err := db.View(func(tx *bolt.Tx) error {
		ob := tx.Bucket([]byte(store.BucketOutbox))
		c := tx.Bucket([]byte(store.BucketDelivered)).Cursor()
		k, v := c.Seek(prefix)
		if after != nil {
			if k, v = c.Seek(after); bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Next() {
			last = bytes.Clone(k)
			if ob.Get(k) != nil {
				continue
			}
			var d Delivered
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("delivered entry %q: %w", k, err)
			}
			if d.Reason != ReasonRemove && !d.At.After(before) {
				out = append(out, d)
			}
		}
		return nil
	})
	return out, last, err
}

// countDelivered counts target's delivered states (removals included: counting
// them would mean decoding every entry).
func countDelivered(db *store.DB, target string) int {
	n := 0
	prefix := []byte(target + "\x00")
	_ = db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(store.BucketDelivered)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n
}
