// Package users holds the people presencebridge watches: one row of the users file
// (a PBX export or a sheet saved as CSV) each.
package users

import "strings"

// User is one watched person: the Teams identity and the PBX identity.
type User struct {
	// UPN is the Teams user principal name (usually the e-mail address), lower case.
	UPN string `json:"upn"`
	// SIPURI is the PBX presence identity, e.g. "sip:1001@pbx.example", if given.
	SIPURI string `json:"sipUri,omitempty"`
	// Extension is the PBX extension number, if given.
	Extension string `json:"extension,omitempty"`
	// Account names the [Account.X] section that serves this user; empty means
	// "decided by the UPN's domain".
	Account string `json:"account,omitempty"`
	// Name is an optional display name for logs and status.
	Name string `json:"name,omitempty"`
	// Line is the line of the users file the row came from (1 is the header).
	Line int `json:"line,omitempty"`
}

// Domain returns the part of the UPN after '@', lower case.
func (u User) Domain() string {
	if i := strings.LastIndexByte(u.UPN, '@'); i >= 0 {
		return strings.ToLower(u.UPN[i+1:])
	}
	return ""
}
