package poll

import (
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
)

// Kept reads the last Teams state the poller kept for each user. The poller owns
// store.BucketPresence (UPN -> presence.State) and store.BucketUserIDs (UPN -> the
// resolved object id); others read them through here.
func Kept(db *store.DB) KeptStates { return KeptStates{db} }

// KeptStates is the poller's record of the users' last Teams states.
type KeptStates struct{ db *store.DB }

// Last is upn's last Teams state, if one was read.
func (k KeptStates) Last(upn string) (presence.State, bool, error) {
	var st presence.State
	found, err := k.db.Get(store.BucketPresence, upn, &st)
	return st, found, err
}
