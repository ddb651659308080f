package app

import (
	"bytes"
	"fmt"
	"log/slog"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/teams/poll"
)

// openState opens the state file, first upgrading one an older release wrote
// (store.Rewrite with upgradeRecord), so the service carries on with its tokens,
// ids, states and deliveries.
func openState(path string, log *slog.Logger) (*store.DB, error) {
	db, err := store.Open(path)
	if err != nil || db.Version() >= store.Version {
		return db, err
	}
	from := db.Version()
	db.Close()
	rep, err := store.Rewrite(path, upgradeRecord)
	if err != nil {
		return nil, err
	}
	args := []any{"file", path, "from", from, "to", rep.To, "records", rep.Records, "before", rep.Before, "after", rep.After, "kept", rep.Backup}
	if rep.Unreadable > 0 {
		log.Warn("State file upgraded; records it could not read were left out", append(args, "unreadable", rep.Unreadable, "first", rep.FirstUnreadable.Error())...)
	} else {
		log.Info("State file upgraded to this release's format", args...)
	}
	return store.Open(path)
}

// legacyAccounts is the bucket where the releases before format 2 kept app's
// status report ("_report"), compose's stale episodes ("_stale.<account>") and
// each poller's status (by account id, read by nobody).
const legacyAccounts = "accounts"

// upgradeRecord is each bucket owner's upgrade, and the moves out of the
// legacy accounts bucket.
func upgradeRecord(bucket string, key, val []byte) (string, []byte, []byte, error) {
	var err error
	switch bucket {
	case legacyAccounts:
		switch {
		case string(key) == "_report":
			return store.BucketStatus, []byte(statusKey), val, nil
		case bytes.HasPrefix(key, []byte("_stale.")):
			return store.BucketStale, key[len("_stale."):], val, nil
		}
		return "", nil, nil, nil
	case store.BucketOutbox, store.BucketDelivered:
		val, err = delivery.Rewrite(bucket, key, val)
	case store.BucketPresence, store.BucketUserIDs:
		val, err = poll.Rewrite(bucket, key, val)
	case store.BucketSIPPubs:
		val, err = sip.Rewrite(bucket, key, val)
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("upgrade: %w", err)
	}
	return bucket, key, val, nil
}
