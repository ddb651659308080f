package sip

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/store"
)

// BoltPublications keeps the publications in the state file, so that after a
// restart the publisher modifies or removes the ones it made before. Its bucket,
// store.BucketSIPPubs, belongs to this package: the key is the SIP URI for a
// publication of Event: presence (as every release wrote), "dialog " and the
// SIP URI for one of Event: dialog (a URI starts with sip: or sips:, so the two
// never meet); the value a compact record (store.Record):
//
//	version 1: etag, expires, lifetime (ns), transport, dest, then the state shown:
//	           state, basic, activity, note
//	version 2: version 1's fields, then the state's dialog column and the
//	           dialog-info version last sent
//
// Version 1 records (and the JSON of older releases) are read alongside
// version 2: both are Event: presence publications, with no dialog column.
func BoltPublications(db *store.DB) ETagStore { return boltPublications{db} }

type boltPublications struct{ db *store.DB }

const (
	recordV1 = 1
	recordV2 = 2
)

// dialogKeyPrefix starts the bucket's keys of Event: dialog publications.
const dialogKeyPrefix = EventDialog + " "

// storeKey is k's key in the bucket.
func storeKey(k Key) string {
	if k.Event == EventPresence {
		return k.URI
	}
	return k.Event + " " + k.URI
}

// readKey reads a bucket key back.
func readKey(raw string) Key {
	if uri, ok := strings.CutPrefix(raw, dialogKeyPrefix); ok {
		return Key{URI: uri, Event: EventDialog}
	}
	return Key{URI: raw, Event: EventPresence}
}

func encodePublication(p Publication) []byte {
	return store.NewRecord(recordV2, 100).Str(p.ETag).Time(p.Expires).Int(int64(p.Lifetime)).Str(p.Transport).Str(p.Dest).
		Str(p.Shows.State).Str(p.Shows.Basic).Str(p.Shows.Activity).Str(p.Shows.Note).
		Str(p.Shows.Dialog).Uint(p.Version).Bytes()
}

// decodePublication reads a publication, compact or (from an older release) the
// JSON that kept the PIDF body itself: its state is read back from the body.
func decodePublication(raw []byte) (Publication, error) {
	if store.IsJSON(raw) {
		var old struct {
			ETag      string        `json:"etag"`
			Expires   time.Time     `json:"expires"`
			Lifetime  time.Duration `json:"lifetime"`
			Body      []byte        `json:"body"`
			Transport string        `json:"transport"`
			Dest      string        `json:"dest"`
		}
		if err := json.Unmarshal(raw, &old); err != nil {
			return Publication{}, err
		}
		p := Publication{ETag: old.ETag, Expires: old.Expires, Lifetime: old.Lifetime, Transport: old.Transport, Dest: old.Dest}
		if len(old.Body) > 0 {
			shows, err := parsePIDF(old.Body)
			if err != nil {
				return p, fmt.Errorf("the kept PIDF body: %w", err)
			}
			p.Shows = shows
		}
		return p, nil
	}
	r := store.ReadRecord(raw)
	p := Publication{ETag: r.Str(), Expires: r.Time(), Lifetime: time.Duration(r.Int()), Transport: r.Str(), Dest: r.Str()}
	p.Shows = presence.Mapped{State: r.Str(), Basic: r.Str(), Activity: r.Str(), Note: r.Str()}
	if r.Version() >= recordV2 {
		p.Shows.Dialog, p.Version = r.Str(), r.Uint()
	}
	return p, r.Err()
}

// parsePIDF reads back the state a body PIDF wrote: basic, the RPID activity
// and the note (the state word for HTTP targets is not in a PIDF).
func parsePIDF(body []byte) (presence.Mapped, error) {
	var doc struct {
		Basic  string `xml:"tuple>status>basic"`
		Note   string `xml:"tuple>note"`
		Person struct {
			Activities struct {
				Inner []struct {
					XMLName xml.Name
					Text    string `xml:",chardata"`
				} `xml:",any"`
			} `xml:"activities"`
		} `xml:"person"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		return presence.Mapped{}, err
	}
	m := presence.Mapped{Basic: doc.Basic, Note: doc.Note}
	for _, a := range doc.Person.Activities.Inner {
		if a.XMLName.Local == "other" {
			m.Activity = a.Text
		} else {
			m.Activity = a.XMLName.Local
		}
	}
	return m, nil
}

// Rewrite is how the bucket is rewritten compact when the state file is upgraded
// (store.Rewrite).
func Rewrite(bucket string, key, val []byte) ([]byte, error) {
	if bucket != store.BucketSIPPubs || !store.IsJSON(val) {
		return val, nil
	}
	p, err := decodePublication(val)
	return encodePublication(p), err
}

func (s boltPublications) LoadPublications() (map[Key]Publication, error) {
	out := map[Key]Publication{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(store.BucketSIPPubs)).ForEach(func(k, raw []byte) error {
			if p, err := decodePublication(raw); err == nil {
				out[readKey(string(k))] = p
			}
			return nil
		})
	})
	return out, err
}

func (s boltPublications) SavePublications(pubs map[Key]*Publication) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := store.Bucket(tx, store.BucketSIPPubs)
		for k, p := range pubs {
			key := []byte(storeKey(k))
			if p == nil {
				if err := b.Delete(key); err != nil {
					return err
				}
				continue
			}
			if err := b.Put(key, encodePublication(*p)); err != nil {
				return err
			}
		}
		return nil
	})
}
