package delivery

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// BoltOutbox is the Outbox in the state file. Its buckets belong to this package:
// store.BucketOutbox (target + "\x00" + UPN -> the pending Item),
// store.BucketDelivered (the same key -> the Delivered) and
// store.BucketOutboxSeq (target -> its last Seq, 8 bytes big endian).
func BoltOutbox(db *store.DB) Outbox { return boltOutbox{db} }

type boltOutbox struct{ db *store.DB }

func outboxKey(target, upn string) []byte { return []byte(target + "\x00" + upn) }

func targetPrefix(target string) []byte { return []byte(target + "\x00") }

func upnOf(key []byte) string {
	if i := bytes.IndexByte(key, 0); i >= 0 {
		return string(key[i+1:])
	}
	return string(key)
}

func (o boltOutbox) Enqueue(targets []string, accepts []func(users.User) bool, items []Item) error {
	type put struct{ key, val []byte }
	var puts []put
	return o.db.Update(func(tx *bolt.Tx) error {
		ob, sb := store.Bucket(tx, store.BucketOutbox), store.Bucket(tx, store.BucketOutboxSeq)
		for ti, t := range targets {
			var seq uint64
			if v := sb.Get([]byte(t)); len(v) == 8 {
				seq = binary.BigEndian.Uint64(v)
			}
			puts = puts[:0]
			for _, it := range items {
				if accepts[ti] != nil && !accepts[ti](it.User) {
					continue
				}
				seq++
				it.Seq = seq
				puts = append(puts, put{outboxKey(t, it.User.UPN), encodeItem(it)})
			}
			// Sequence numbers in the order given, puts in key order: bbolt
			// takes keys in random order into a large bucket slowly (the first
			// states of 200,000 users took many minutes), in order quickly. A
			// user twice keeps the later item (a stable sort).
			slices.SortStableFunc(puts, func(a, b put) int { return bytes.Compare(a.key, b.key) })
			for _, p := range puts {
				if err := ob.Put(p.key, p.val); err != nil {
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

func (o boltOutbox) Pick(target string, n int, after string, want func(upn string) bool) ([]Item, string, error) {
	var out []Item
	last := after
	prefix := targetPrefix(target)
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(store.BucketOutbox)).Cursor()
		take := func(k, v []byte) error {
			upn := upnOf(k)
			if !want(upn) {
				return nil
			}
			it, err := decodeItem(upn, v)
			if err != nil {
				return fmt.Errorf("outbox entry %q: %w", k, err)
			}
			out = append(out, it)
			last = upn
			return nil
		}
		k, v := c.Seek(prefix)
		var from []byte
		if after != "" {
			from = outboxKey(target, after)
			if k, v = c.Seek(from); bytes.Equal(k, from) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Next() {
			if err := take(k, v); err != nil {
				return err
			}
		}
		if from == nil {
			return nil
		}
		for k, v = c.Seek(prefix); k != nil && bytes.Compare(k, from) <= 0 && len(out) < n; k, v = c.Next() {
			if err := take(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	return out, last, err
}

func (o boltOutbox) Settle(target string, accepted []Delivered, dropped []Item) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		ob, db := store.Bucket(tx, store.BucketOutbox), store.Bucket(tx, store.BucketDelivered)
		removeIfSame := func(upn string, seq uint64) error {
			k := outboxKey(target, upn)
			raw := ob.Get(k)
			if raw == nil {
				return nil
			}
			if stored, err := pendingSeq(raw); err != nil || stored != seq {
				return nil // replaced by a newer state meanwhile (or unreadable: left for Pick to report)
			}
			return ob.Delete(k)
		}
		for _, d := range accepted {
			if err := removeIfSame(d.UPN, d.Seq); err != nil {
				return err
			}
			if err := db.Put(outboxKey(target, d.UPN), encodeDelivered(d)); err != nil {
				return err
			}
		}
		for _, it := range dropped {
			if err := removeIfSame(it.User.UPN, it.Seq); err != nil {
				return err
			}
		}
		return nil
	})
}

// countKeys counts the keys of bucket with target's prefix.
func (o boltOutbox) countKeys(bucket, target string) int {
	n := 0
	prefix := targetPrefix(target)
	_ = o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bucket)).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n
}

func (o boltOutbox) Pending(target string) int { return o.countKeys(store.BucketOutbox, target) }

func (o boltOutbox) CountDelivered(target string) int {
	return o.countKeys(store.BucketDelivered, target)
}

func (o boltOutbox) HasPending(target, upn string) bool {
	found := false
	_ = o.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket([]byte(store.BucketOutbox)).Get(outboxKey(target, upn)) != nil
		return nil
	})
	return found
}

func (o boltOutbox) Delivered(target, upn string) (Delivered, bool, error) {
	var d Delivered
	found := false
	err := o.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(store.BucketDelivered)).Get(outboxKey(target, upn))
		if v == nil {
			return nil
		}
		found = true
		var err error
		d, err = decodeDelivered(target, upn, v)
		return err
	})
	return d, found, err
}

func (o boltOutbox) DeliveredAfter(target, after string, n int, before time.Time) ([]Delivered, string, error) {
	var out []Delivered
	last := after
	prefix := targetPrefix(target)
	err := o.db.View(func(tx *bolt.Tx) error {
		ob := tx.Bucket([]byte(store.BucketOutbox))
		c := tx.Bucket([]byte(store.BucketDelivered)).Cursor()
		k, v := c.Seek(prefix)
		if after != "" {
			from := outboxKey(target, after)
			if k, v = c.Seek(from); bytes.Equal(k, from) {
				k, v = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, v = c.Next() {
			last = upnOf(k)
			if ob.Get(k) != nil {
				continue
			}
			d, err := decodeDelivered(target, last, v)
			if err != nil {
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

func (o boltOutbox) Shown() (map[string]Delivered, error) {
	out := map[string]Delivered{}
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(store.BucketDelivered)).ForEach(func(k, v []byte) error {
			target, _, _ := bytes.Cut(k, []byte{0})
			d, err := decodeDelivered(string(target), upnOf(k), v)
			if err != nil {
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
