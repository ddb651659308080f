// The Windows service restricts the folder holding its secrets (service_windows.go);
// what is checked of the ACL it reads back lives here, so that Linux tests run it.

package main

import "strings"

// tokenDirSDDL gives the folder of Presence.ini and the state file to SYSTEM and
// Administrators only, not inherited from ProgramData (where Users may read):
// the state file holds refresh tokens and Presence.ini the client secret.
const tokenDirSDDL = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"

// broadAccess names the first group of many accounts (Everyone, Users,
// Authenticated Users) that an allow entry of the SDDL DACL lets in, or "".
func broadAccess(sddl string) string {
	groups := map[string]string{"WD": "Everyone", "BU": "Users", "AU": "Authenticated Users"}
	for _, ace := range strings.Split(sddl, "(")[1:] {
		f := strings.Split(strings.TrimSuffix(ace, ")"), ";")
		if len(f) == 6 && f[0] == "A" && groups[f[5]] != "" {
			return groups[f[5]]
		}
	}
	return ""
}
