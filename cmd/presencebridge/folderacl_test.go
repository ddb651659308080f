package main

import "testing"

// The ACL read back after the service restricts its folder: what the service
// sets passes; what Wine (or a file system without ACLs) gives back is named.
func TestBroadAccess(t *testing.T) {
	for sddl, want := range map[string]string{
		tokenDirSDDL:                            "",
		"D:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)": "",
		"D:(A;OICI;FA;;;SY)(A;OICI;FA;;;S-1-5-21-0-0-0-1000)(A;OICI;0x1200a9;;;WD)": "Everyone",
		"D:AI(A;OICIID;0x1200a9;;;BU)(A;OICIID;FA;;;SY)":                            "Users",
		"D:(A;;FR;;;AU)":                  "Authenticated Users",
		"D:P(D;OICI;FA;;;WD)(A;;FA;;;SY)": "", // a deny entry lets no one in
		"":                                "",
	} {
		if got := broadAccess(sddl); got != want {
			t.Errorf("broadAccess(%q) = %q; want %q", sddl, got, want)
		}
	}
}
