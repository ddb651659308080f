package users

import (
	"fmt"
	"slices"
	"strings"
)

// AllowMassRemovalCommand is what an engineer runs to confirm a users file that
// Removal.Check refused.
const AllowMassRemovalCommand = "presencebridge users apply --allow-mass-removal"

// Removal compares a users file with the users the PBX shows now.
type Removal struct {
	Shown    int      // users whose presence the PBX shows now
	Users    int      // users the file lists
	Removed  int      // users shown now that the file no longer lists
	Examples []string // a few of them, sorted
}

// CompareShown compares list with shown, the UPNs whose presence the PBX shows.
// Users added at the same time do not offset those removed.
func CompareShown(shown []string, list []User) Removal {
	listed := make(map[string]bool, len(list))
	for _, u := range list {
		listed[u.UPN] = true
	}
	var removed []string
	for _, upn := range shown {
		if !listed[upn] {
			removed = append(removed, upn)
		}
	}
	slices.Sort(removed)
	return Removal{Shown: len(shown), Users: len(list), Removed: len(removed), Examples: removed[:min(3, len(removed))]}
}

// Check refuses (with a *MassRemovalError naming file) a users file that lists
// nobody, or that would take more than half of the users shown off the PBX.
func (r Removal) Check(file string) error {
	if r.Users > 0 && r.Removed*2 <= r.Shown {
		return nil
	}
	return &MassRemovalError{File: file, Removal: r}
}

// MassRemovalError refuses a users file that would take most of the users off the
// PBX at once: an HR or PBX export that failed and left only its header is the
// usual cause, and applying it would withdraw everyone's presence.
type MassRemovalError struct {
	File string // the users file
	Removal
}

func (e *MassRemovalError) Error() string {
	var what string
	switch {
	case e.Users == 0 && e.Shown == 0:
		what = fmt.Sprintf("%s lists no users (only a header, comments or blank lines); add one row per user under the header", e.File)
	case e.Users == 0:
		what = fmt.Sprintf("%s lists no users (only a header, comments or blank lines), which would withdraw the presence of all %d users from the PBX; if an export failed, restore the file",
			e.File, e.Shown)
	default:
		what = fmt.Sprintf("%s would withdraw the presence of %d of the %d users shown on the PBX (%s), more than half; if an export failed, restore the file",
			e.File, e.Removed, e.Shown, strings.Join(e.Examples, ", ")+more(e.Removed-len(e.Examples)))
	}
	return what + "; if this is what you want, confirm it with: " + AllowMassRemovalCommand
}

func more(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" and %d more", n)
}
