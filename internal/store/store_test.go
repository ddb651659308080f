package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReopenKeepsValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "presencebridge.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutRaw(BucketTokens, "contoso|", []byte("cache-blob")); err != nil {
		t.Fatal(err)
	}
	type rec struct{ ID string }
	if err := db.PutMany(BucketUserIDs, map[string][]byte{"a@x": []byte(`{"id":"1"}`), "b@x": []byte(`{"id":"2"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	raw, err := db.GetRaw(BucketTokens, "contoso|")
	if err != nil || string(raw) != "cache-blob" {
		t.Fatalf("token blob after reopen = %q, %v", raw, err)
	}
	var r rec
	if found, err := db.Get(BucketUserIDs, "b@x", &r); err != nil || !found || r.ID != "2" {
		t.Fatalf("Get b@x = %v %v %+v", found, err, r)
	}
	if found, err := db.Get(BucketUserIDs, "missing@x", &r); err != nil || found {
		t.Fatalf("Get missing = %v %v", found, err)
	}
	n := 0
	if err := db.ForEach(BucketUserIDs, func(string, []byte) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("ForEach saw %d entries, %v", n, err)
	}
	if err := db.Delete(BucketUserIDs, "a@x"); err != nil {
		t.Fatal(err)
	}
	if found, _ := db.Get(BucketUserIDs, "a@x", &r); found {
		t.Fatal("a@x still present after Delete")
	}
}

func TestFileReadableByOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// A copy restored by hand often comes back world-readable; Open tightens it.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("state file mode = %o, want 600", perm)
	}
}

func TestSecondOpenFailsClearlyInsteadOfHanging(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// bbolt's flock is per open file description, so a second Open in the same
	// process contends like a second process would.
	_, err = Open(path)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open error = %v, want ErrInUse", err)
	}
}
