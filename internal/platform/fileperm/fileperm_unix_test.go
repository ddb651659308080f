//go:build !windows

package fileperm

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func owner(t *testing.T, path string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode().Perm()
}

// As root, in a folder owned by the service account (here uid/gid 65534), a new
// file goes to that account; in root's own folder nothing changes.
func TestAdopt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: Adopt only acts for root (what it does as another user is nothing, checked below)")
	}
	svc := filepath.Join(t.TempDir(), "state")
	os.Mkdir(svc, 0o700)
	if err := os.Chown(svc, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(svc, "presencebridge.db")
	os.WriteFile(db, []byte("x"), 0o600)
	if err := Adopt(db, false); err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := owner(t, db); uid != 65534 || gid != 65534 || mode != 0o600 {
		t.Fatalf("state file: %d:%d %v; want 65534:65534 0600", uid, gid, mode)
	}

	etc := filepath.Join(t.TempDir(), "etc")
	os.Mkdir(etc, 0o750)
	os.Chown(etc, 0, 65534)
	key := filepath.Join(etc, "secret.key")
	os.WriteFile(key, []byte("k"), 0o600)
	if err := Adopt(key, true); err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := owner(t, key); uid != 0 || gid != 65534 || mode != 0o640 {
		t.Fatalf("key file: %d:%d %v; want 0:65534 0640", uid, gid, mode)
	}

	mine := filepath.Join(t.TempDir(), "f")
	os.WriteFile(mine, []byte("x"), 0o600)
	if err := Adopt(mine, true); err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := owner(t, mine); uid != 0 || gid != 0 || mode != 0o600 {
		t.Fatalf("file in root's folder: %d:%d %v; want unchanged 0:0 0600", uid, gid, mode)
	}
}
