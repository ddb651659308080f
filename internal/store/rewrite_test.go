package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A file of the format before (no version, a bucket "accounts") is rewritten:
// every record passes through the upgrade (moved, changed or dropped), the result
// is at Version, the old file is kept beside it, and a second Rewrite does nothing.
func TestRewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "presencebridge.db")
	old, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = old.Update(func(tx *bolt.Tx) error {
		acc, _ := tx.CreateBucket([]byte("accounts"))
		acc.Put([]byte("_report"), []byte(`{"version":"0.1.90"}`))
		acc.Put([]byte("main"), []byte(`{"cycles":3}`))
		p, _ := tx.CreateBucket([]byte(BucketPresence))
		for _, u := range []string{"a@x", "b@x", "bad@x"} {
			p.Put([]byte(u), []byte(`{"upn":"`+u+`"}`))
		}
		tok, _ := tx.CreateBucket([]byte(BucketTokens))
		return tok.Put([]byte("main|"), []byte(`{"RefreshToken":{}}`))
	})
	old.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := db.Version(); v != 1 {
		t.Fatalf("an unversioned file with data has version %d, want 1", v)
	}
	db.Close()

	up := func(bucket string, key, val []byte) (string, []byte, []byte, error) {
		switch {
		case bucket == "accounts" && string(key) == "_report":
			return BucketStatus, []byte("report"), val, nil
		case bucket == "accounts":
			return "", nil, nil, nil
		case string(key) == "bad@x":
			return "", nil, nil, errors.New("cannot read it")
		case bucket == BucketPresence:
			return bucket, key, []byte(strings.ToUpper(string(val))), nil
		}
		return bucket, key, val, nil
	}
	rep, err := Rewrite(path, up)
	if err != nil {
		t.Fatal(err)
	}
	if rep.From != 1 || rep.To != Version || rep.Records != 4 || rep.Dropped != 1 || rep.Unreadable != 1 ||
		rep.FirstUnreadable == nil || !strings.Contains(rep.FirstUnreadable.Error(), `presence/"bad@x": cannot read it`) || rep.Backup != path+".v1" {
		t.Fatalf("report %+v", rep)
	}
	if fi, err := os.Stat(rep.Backup); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != rep.Before {
		t.Fatalf("backup: %v, %v", fi, err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := db.Version(); v != Version {
		t.Errorf("version after the rewrite %d, want %d", v, Version)
	}
	for bucket, want := range map[string]map[string]string{
		BucketStatus:   {"report": `{"version":"0.1.90"}`},
		BucketPresence: {"a@x": `{"UPN":"A@X"}`, "b@x": `{"UPN":"B@X"}`},
		BucketTokens:   {"main|": `{"RefreshToken":{}}`},
	} {
		got := map[string]string{}
		db.ForEach(bucket, func(k string, v []byte) error { got[k] = string(v); return nil })
		if len(got) != len(want) {
			t.Errorf("%s holds %v, want %v", bucket, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s/%s = %q, want %q", bucket, k, got[k], v)
			}
		}
	}
	db.Close()
	if rep, err := Rewrite(path, up); err != nil || rep.Records != 0 || rep.Backup != "" {
		t.Fatalf("a second Rewrite: %+v, %v; want nothing done", rep, err)
	}
	// A new file is at Version from the start.
	fresh, err := Open(filepath.Join(t.TempDir(), "new.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if v := fresh.Version(); v != Version {
		t.Errorf("a new file has version %d", v)
	}
}
