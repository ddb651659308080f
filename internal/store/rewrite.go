package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Upgrade tells Rewrite what a record of an older format becomes: the bucket
// (empty: the record is dropped), key and value it is written with. An error
// drops the record too, and is counted.
type Upgrade func(bucket string, key, val []byte) (toBucket string, toKey, toVal []byte, err error)

// RewriteReport is what Rewrite did.
type RewriteReport struct {
	From, To        int    // formats
	Records         int    // records written
	Dropped         int    // records the upgrade dropped
	Unreadable      int    // records it could not read (dropped too)
	FirstUnreadable error  // the first of those
	Backup          string // where the file as it was is kept
	Before, After   int64  // file sizes
}

// rewriteBatch is how many records go into one transaction of the new file.
const rewriteBatch = 20_000

// Rewrite puts the state file at path (which must not be open) into this
// release's format: every record passes through up into a new file, written in
// key order with full pages; the old file is kept beside it as path + ".v" + its
// format, and the new one takes its place with one rename, so a stop at any
// moment leaves a file that opens. It does nothing to a file already at Version.
func Rewrite(path string, up Upgrade) (RewriteReport, error) {
	var rep RewriteReport
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return rep, fmt.Errorf("upgrade state file %s: %w", path, ErrInUse)
		}
		return rep, fmt.Errorf("upgrade state file %s: %w", path, err)
	}
	defer src.Close()
	rep.To = Version
	_ = src.View(func(tx *bolt.Tx) error { rep.From = formatOf(tx); return nil })
	if rep.From >= Version {
		return rep, nil
	}
	if fi, err := os.Stat(path); err == nil {
		rep.Before = fi.Size()
	}
	tmp := path + ".upgrading"
	os.Remove(tmp) // left by a stop during an earlier try
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return rep, fmt.Errorf("upgrade state file %s: %w", path, err)
	}
	err = copyUpgraded(src, dst, up, &rep)
	if err == nil {
		err = dst.Update(func(tx *bolt.Tx) error { return setFormat(tx, Version) })
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return rep, fmt.Errorf("upgrade state file %s: %w", path, err)
	}
	rep.Backup = fmt.Sprintf("%s.v%d", path, max(rep.From, 1))
	if err := copyFile(path, rep.Backup); err != nil {
		os.Remove(tmp)
		return rep, fmt.Errorf("upgrade state file %s: keep the old one: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return rep, fmt.Errorf("upgrade state file %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		rep.After = fi.Size()
	}
	return rep, nil
}

// copyUpgraded writes every record of src, upgraded, into dst.
func copyUpgraded(src, dst *bolt.DB, up Upgrade, rep *RewriteReport) error {
	type rec struct {
		bucket   string
		key, val []byte
	}
	var batch []rec
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := dst.Update(func(tx *bolt.Tx) error {
			for _, r := range batch {
				b, err := tx.CreateBucketIfNotExists([]byte(r.bucket))
				if err != nil {
					return err
				}
				b.FillPercent = 1 // written in key order: full pages
				if err := b.Put(r.key, r.val); err != nil {
					return err
				}
			}
			return nil
		})
		rep.Records += len(batch)
		batch = batch[:0]
		return err
	}
	err := src.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if string(name) == bucketMeta {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return nil // a nested bucket: presencebridge has none
				}
				to, key, val, err := up(string(name), k, v)
				switch {
				case err != nil:
					rep.Unreadable++
					if rep.FirstUnreadable == nil {
						rep.FirstUnreadable = fmt.Errorf("%s/%q: %w", name, k, err)
					}
					return nil
				case to == "":
					rep.Dropped++
					return nil
				}
				// Copies: bbolt's keys and values are valid only during the transaction.
				batch = append(batch, rec{to, append([]byte(nil), key...), append([]byte(nil), val...)})
				if len(batch) == rewriteBatch {
					return flush()
				}
				return nil
			})
		})
	})
	if err != nil {
		return err
	}
	return flush()
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
