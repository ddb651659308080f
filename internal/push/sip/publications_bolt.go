package sip

import (
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/store"
)

// BoltPublications keeps the publications in the state file, so that after a
// restart the publisher modifies or removes the ones it made before. Its bucket,
// store.BucketSIPPubs (SIP URI -> Publication), belongs to this package.
func BoltPublications(db *store.DB) ETagStore { return boltPublications{db} }

type boltPublications struct{ db *store.DB }

func (s boltPublications) LoadPublications() (map[string]Publication, error) {
	out := map[string]Publication{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(store.BucketSIPPubs)).ForEach(func(k, raw []byte) error {
			var p Publication
			if json.Unmarshal(raw, &p) == nil {
				out[string(k)] = p
			}
			return nil
		})
	})
	return out, err
}

func (s boltPublications) SavePublications(pubs map[string]*Publication) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(store.BucketSIPPubs))
		for uri, p := range pubs {
			if p == nil {
				if err := b.Delete([]byte(uri)); err != nil {
					return err
				}
				continue
			}
			raw, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(uri), raw); err != nil {
				return err
			}
		}
		return nil
	})
}
