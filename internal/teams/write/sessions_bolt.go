package write

import (
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
)

// The sessions' records (see store.Record), by UPN:
//
//	version 1: user id, availability, activity, set, expires
const recordV1 = 1

// BoltSessions keeps the writer's sessions in the state file's bucket
// store.BucketTeamSessions.
type BoltSessions struct{ DB *store.DB }

// LoadSessions reads every kept session.
func (b BoltSessions) LoadSessions() (map[string]Session, error) {
	out := map[string]Session{}
	err := b.DB.ForEach(store.BucketTeamSessions, func(upn string, raw []byte) error {
		r := store.ReadRecord(raw)
		s := Session{UserID: r.Str(), Pair: Pair{presence.Availability(r.Str()), presence.Activity(r.Str())}, Set: r.Time(), Expires: r.Time()}
		if err := r.Err(); err != nil {
			return err
		}
		out[upn] = s
		return nil
	})
	return out, err
}

// SaveSession writes upn's session; nil deletes it.
func (b BoltSessions) SaveSession(upn string, s *Session) error {
	if s == nil {
		return b.DB.Delete(store.BucketTeamSessions, upn)
	}
	rec := store.NewRecord(recordV1, 64).Str(s.UserID).Str(string(s.Pair.Availability)).Str(string(s.Pair.Activity)).Time(s.Set).Time(s.Expires)
	return b.DB.PutRaw(store.BucketTeamSessions, upn, rec.Bytes())
}
