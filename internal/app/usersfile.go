package app

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/store"
	"github.com/presencebridge/presencebridge/internal/users"
)

// confirmedUsersFile is the BucketConfirmed key of the users file an engineer
// accepted with `users apply --allow-mass-removal`.
const confirmedUsersFile = "usersfile"

// usersFileSum is the SHA-256 of the users file's content.
func usersFileSum(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read users file: %w", err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// compareShown compares list with the users the PBX shows now (delivery.Shown).
func compareShown(db *store.DB, list []users.User) (users.Removal, error) {
	shown, err := delivery.BoltOutbox(db).Shown()
	if err != nil {
		return users.Removal{}, err
	}
	upns := make([]string, 0, len(shown))
	for upn := range shown {
		upns = append(upns, upn)
	}
	return users.CompareShown(upns, list), nil
}

// checkUsers refuses a users file that lists nobody, or that would take more than
// half of the users the PBX shows off it (users.Removal.Check), unless this very
// file was confirmed with `users apply --allow-mass-removal`. It returns the
// comparison it made.
func checkUsers(db *store.DB, path string, list []users.User) (users.Removal, error) {
	r, err := compareShown(db, list)
	if err != nil {
		return r, err
	}
	refused := r.Check(path)
	if refused == nil {
		return r, nil
	}
	var confirmed string
	if _, err := db.Get(store.BucketConfirmed, confirmedUsersFile, &confirmed); err != nil {
		return r, err
	}
	if sum, err := usersFileSum(path); err == nil && sum == confirmed {
		return r, nil
	}
	return r, refused
}

// CheckUsersFile is the service's check of a users file (list, read from path)
// against the state file, for verify: a *users.MassRemovalError when it lists
// nobody or would take more than half of the users off the PBX unconfirmed.
func CheckUsersFile(db *store.DB, path string, list []users.User) error {
	_, err := checkUsers(db, path, list)
	return err
}

// UsersReport is what `users apply` did.
type UsersReport struct {
	File    string `json:"file"`
	Users   int    `json:"users"`   // users the file lists
	Skipped int    `json:"skipped"` // rows skipped (status and verify name them)
	Shown   int    `json:"shown"`   // users the PBX showed before
	Removed int    `json:"removed"` // of those, users the file no longer lists
	// Confirmed is set when a mass removal was confirmed with --allow-mass-removal.
	Confirmed bool   `json:"confirmed"`
	Result    string `json:"result"`
}

// confirmUsers checks the users file at path (list, with skipped rows left out)
// against what the PBX shows and, with allow, records that this file is meant
// even though it takes most users off the PBX.
func confirmUsers(db *store.DB, path string, list []users.User, skipped int, allow bool) (UsersReport, error) {
	rep := UsersReport{File: path, Users: len(list), Skipped: skipped}
	r, err := checkUsers(db, path, list)
	rep.Shown, rep.Removed = r.Shown, r.Removed
	var mass *users.MassRemovalError
	switch {
	case err == nil:
		return rep, nil
	case !errors.As(err, &mass) || !allow:
		return rep, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	sum, err := usersFileSum(path)
	if err != nil {
		return rep, err
	}
	if err := db.Put(store.BucketConfirmed, confirmedUsersFile, sum); err != nil {
		return rep, err
	}
	rep.Confirmed = true
	return rep, nil
}

// ConfirmUsers is `users apply` while the service is stopped: it checks the users
// file against the state file and, with allow, records the confirmation there
// for the next start. The running service's reload does the same.
func ConfirmUsers(cfg *config.Config, allow bool) (UsersReport, error) {
	db, err := store.Open(cfg.StateFile)
	if err != nil {
		return UsersReport{File: cfg.UsersFile}, err
	}
	defer db.Close()
	list, problems, err := users.Load(cfg.UsersFile)
	if err != nil {
		return UsersReport{File: cfg.UsersFile}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	rep, err := confirmUsers(db, cfg.UsersFile, list, len(problems), allow)
	if err == nil {
		rep.Result = "the users file is accepted; the service uses it when it starts"
	}
	return rep, err
}
