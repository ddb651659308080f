package users

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckRemoval(t *testing.T) {
	us := func(upns ...string) []User {
		var out []User
		for _, u := range upns {
			out = append(out, User{UPN: u, Extension: "1"})
		}
		return out
	}
	shown := []string{"a@x", "b@x", "c@x", "d@x"}
	cases := []struct {
		name  string
		shown []string
		list  []User
		want  string // "" = accepted; else part of the error
	}{
		{"first start", nil, us("a@x"), ""},
		{"same users", shown, us("a@x", "b@x", "c@x", "d@x"), ""},
		{"half removed", shown, us("a@x", "b@x"), ""},
		{"more than half removed", shown, us("a@x"), "would withdraw the presence of 3 of the 4 users shown on the PBX (b@x, c@x, d@x), more than half"},
		{"replaced by others", shown, us("a@x", "e@x", "f@x", "g@x"), "3 of the 4 users"},
		{"header only", shown, nil, "lists no users (only a header, comments or blank lines), which would withdraw the presence of all 4 users"},
		{"header only, nothing shown", nil, nil, "lists no users (only a header, comments or blank lines); add one row per user"},
		{"many removed", []string{"a", "b", "c", "d", "e", "f"}, us("a"), "(b, c, d and 2 more)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CompareShown(tc.shown, tc.list).Check("users.csv")
			if tc.want == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			var me *MassRemovalError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), "confirm it with: presencebridge users apply --allow-mass-removal") {
				t.Errorf("CheckRemoval = %v\nwant it to say %q and how to confirm", err, tc.want)
			}
		})
	}
}
