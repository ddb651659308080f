// Package store is presencebridge's state file: one bbolt file that survives
// restarts, readable by the service account only (0600 file in a 0700 directory).
// Each bucket belongs to one package (the Bucket constants name it), which keeps
// its records in the compact, versioned Record encoding; store opens, locks and
// versions the file and rewrites it for an upgrade (Rewrite), without knowing what
// the records hold.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/platform/fileperm"
)

// Buckets of the state file. Each belongs to one package, which owns its keys and
// records (see the package named); the others read it through that package.
const (
	BucketTokens = "tokens" // teams/auth: account ID + "|" -> MSAL's cache blob
	// The Teams side (package poll): compact records, see teams/poll/kept.go.
	BucketUserIDs  = "userids"  // UPN -> resolved object id
	BucketPresence = "presence" // UPN -> last Teams state
	// Delivery to the targets (package delivery): compact records, see delivery/records.go.
	BucketOutbox    = "outbox"    // target + "\x00" + UPN -> newest item not yet accepted
	BucketDelivered = "delivered" // target + "\x00" + UPN -> what the target last accepted
	BucketOutboxSeq = "outboxseq" // target -> last sequence number given out (8 bytes, big endian)
	BucketSIPPubs   = "sippubs"   // pbx/sip: SIP URI -> publication (entity tag, expiry, state shown)
	BucketStale     = "stale"     // compose: account ID -> start of its stale episode (JSON time)
	BucketStatus    = "status"    // app: "report" -> the last status report (JSON), for status while stopped
	BucketConfirmed = "confirmed" // app: "usersfile" -> SHA-256 (hex) of a users file accepted with users apply --allow-mass-removal
	// BucketTeamSessions: teams/write: UPN -> the presence session presencebridge holds in Teams (see teams/write/sessions_bolt.go).
	BucketTeamSessions = "teamsessions"
	bucketMeta         = "meta" // store: "version" -> the file's format (Version)
)

var allBuckets = []string{BucketTokens, BucketUserIDs, BucketPresence, BucketOutbox, BucketDelivered,
	BucketOutboxSeq, BucketSIPPubs, BucketStale, BucketStatus, BucketConfirmed, BucketTeamSessions, bucketMeta}

// Version is the format of the state file this release writes: 2, compact
// records (store.Record) and one owner per bucket. Version 1, the releases
// before, wrote JSON records and kept the status report and stale episodes in a
// bucket "accounts"; Rewrite upgrades such a file.
const Version = 2

// ErrInUse means another process holds the state file open.
var ErrInUse = errors.New("state file is in use by another presencebridge process")

// DB is the open state file.
type DB struct {
	bolt *bolt.DB
	path string
}

// Open opens (creating if needed) the state file at path. If another process holds
// it, Open gives up after a second with ErrInUse rather than hanging.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory for %s: %w", path, err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open state file %s: %w (is the service or another command running? stop it first)", path, ErrInUse)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	// bbolt creates with 0600 but an existing file may have been copied with wider
	// permissions: tokens live here, so tighten it.
	if err := os.Chmod(path, 0o600); err != nil {
		b.Close()
		return nil, fmt.Errorf("restrict permissions of %s: %w", path, err)
	}
	// Made by root (`sudo presencebridge login` before the first start): hand it to
	// the service account that owns the folder.
	if err := fileperm.Adopt(path, false); err != nil {
		b.Close()
		return nil, fmt.Errorf("give %s to the owner of its folder: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		fresh := true // no bucket yet: a new file, in this release's format
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { fresh = false; return nil })
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		if formatOf(tx) == 0 {
			v := 1 // written before the file had a version
			if fresh {
				v = Version
			}
			return setFormat(tx, v)
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("initialise state file %s: %w", path, err)
	}
	return &DB{bolt: b, path: path}, nil
}

// FillPercent is how full pages are split. bbolt's default, half, suits random
// inserts; presencebridge's come in batches in UPN order (a poll chunk, a Send),
// and then leave pages half empty: the file was twice the size of its records.
const FillPercent = 0.9

// Bucket is the named bucket of tx, ready for writes (FillPercent).
func Bucket(tx *bolt.Tx, name string) *bolt.Bucket {
	b := tx.Bucket([]byte(name))
	if b != nil && tx.Writable() {
		b.FillPercent = FillPercent
	}
	return b
}

// Version is the format the file is in (see the constant Version).
func (d *DB) Version() int {
	v := 0
	_ = d.bolt.View(func(tx *bolt.Tx) error { v = formatOf(tx); return nil })
	return v
}

// formatOf is the format the meta bucket of tx records; 0 when none is.
func formatOf(tx *bolt.Tx) int {
	m := tx.Bucket([]byte(bucketMeta))
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(string(m.Get([]byte("version"))))
	return v
}

// setFormat records format v in the meta bucket of tx.
func setFormat(tx *bolt.Tx, v int) error {
	m, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
	if err != nil {
		return err
	}
	return m.Put([]byte("version"), []byte(strconv.Itoa(v)))
}

// Path returns the file the DB was opened from.
func (d *DB) Path() string { return d.path }

// Close closes the file.
func (d *DB) Close() error { return d.bolt.Close() }

// Update runs fn in one read-write transaction, for callers that must read and
// write atomically (the outbox's compare-and-delete). The buckets above exist.
func (d *DB) Update(fn func(tx *bolt.Tx) error) error { return d.bolt.Update(fn) }

// View runs fn in one read-only transaction.
func (d *DB) View(fn func(tx *bolt.Tx) error) error { return d.bolt.View(fn) }

// GetRaw returns a copy of the value at bucket/key, or nil if absent.
func (d *DB) GetRaw(bucket, key string) ([]byte, error) {
	var out []byte
	err := d.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucket)).Get([]byte(key))
		if v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	return out, nil
}

// PutRaw stores value at bucket/key.
func (d *DB) PutRaw(bucket, key string, value []byte) error {
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Get decodes the JSON value at bucket/key into v; found is false if absent.
func (d *DB) Get(bucket, key string, v any) (found bool, err error) {
	raw, err := d.GetRaw(bucket, key)
	if err != nil || raw == nil {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

// Put stores v as JSON at bucket/key.
func (d *DB) Put(bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return d.PutRaw(bucket, key, raw)
}

// PutMany stores every entry's encoded value in one transaction (one fsync for a
// whole poll cycle's changes rather than one per user).
func (d *DB) PutMany(bucket string, entries map[string][]byte) error {
	if len(entries) == 0 {
		return nil
	}
	// In key order: bbolt puts keys in random order into many pages of a large
	// bucket, splitting and copying them again and again (tens of thousands of
	// first sightings took minutes), and in order into few.
	keys := slices.Sorted(maps.Keys(entries))
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		b := Bucket(tx, bucket)
		for _, k := range keys {
			if err := b.Put([]byte(k), entries[k]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %d entries to %s: %w", len(entries), bucket, err)
	}
	return nil
}

// Delete removes bucket/key (no error if absent).
func (d *DB) Delete(bucket, key string) error {
	err := d.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

// ForEach calls fn for every key in bucket with its raw value, which is only valid
// during the call.
func (d *DB) ForEach(bucket string, fn func(key string, raw []byte) error) error {
	err := d.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			return fn(string(k), v)
		})
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", bucket, err)
	}
	return nil
}
