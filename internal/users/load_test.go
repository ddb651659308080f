package users

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadExports(t *testing.T) {
	cases := []struct {
		file string
		want []User
	}{
		{"excel_semicolon_bom.csv", []User{
			{UPN: "juergen.mueller@contoso.com", Extension: "1001", Line: 2},
			{UPN: "zoe.sahin@contoso.com", Extension: "1002", SIPURI: "sip:1002@pbx.contoso.com", Line: 3},
			{UPN: "john.doe@contoso.de", SIPURI: "sip:1003@pbx.contoso.com", Account: "EU", Line: 4},
		}},
		{"excel_unicode_text.txt", []User{
			{UPN: "anna@contoso.com", Name: "Anna Ångström", SIPURI: "sip:anna@pbx.contoso.com", Extension: "2001", Line: 2},
			{UPN: "bert@contoso.com", Name: "Bert", Extension: "2002", Line: 3},
		}},
		{"excel_sep_line.csv", []User{
			{UPN: "hans@contoso.com", Name: "Müller, Hans", Extension: "300", Line: 3},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			list, problems, err := Load(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) > 0 {
				t.Errorf("problems: %v", problems)
			}
			if !slices.Equal(list, tc.want) {
				t.Errorf("got  %+v\nwant %+v", list, tc.want)
			}
		})
	}
}

func TestLoadProblems(t *testing.T) {
	list, problems, err := Load(filepath.Join("testdata", "problems.csv"))
	if err != nil {
		t.Fatal(err)
	}
	var upns []string
	for _, u := range list {
		upns = append(upns, u.UPN)
	}
	if want := []string{"a@contoso.com", "d@contoso.com"}; !slices.Equal(upns, want) {
		t.Errorf("users %v, want %v", upns, want)
	}
	if list[0].Line != 4 || list[0].Name != "Alice" || list[0].Extension != "100" {
		t.Errorf("first user %+v", list[0])
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	want := []string{
		`problems.csv:5: empty UPN; fill in the user's Teams sign-in name (usually the e-mail address); this row is ignored`,
		`problems.csv:6: UPN "bob" has no '@'; use the Teams sign-in name, e.g. bob@contoso.com; this row is ignored`,
		`problems.csv:7: "c@contoso.com" has neither a SIP URI nor an extension; fill in one of them; this row is ignored`,
		`problems.csv:8: duplicate UPN "a@contoso.com" (first on line 4); this row is ignored`,
		`problems.csv:10: UPN "d e@contoso.com" is not of the form user@domain; this row is ignored`,
		`problems.csv:12: duplicate UPN "a@contoso.com" (first on line 4); this row is ignored`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if problems[3].UPN != "a@contoso.com" || problems[3].Line != 8 {
		t.Errorf("problem fields %+v", problems[3])
	}
}

func TestLoadUnusableFiles(t *testing.T) {
	cases := []struct{ file, want string }{
		{"no_header.csv", `no_header.csv:1: the first row "a@contoso.com;100" looks like a user, not a header; add a header row naming the columns: UPN (upn, userprincipalname, email, e-mail, mail, teams, teamsupn), SIP URI (sip, sipuri, sip uri, uri) or Extension (extension, ext, dn, number); optional: Account (account), Name (name, displayname, display name); any case`},
		{"bad_header.csv", `bad_header.csv:1: header row "Name;Phone;Mail" has no SIP URI or Extension column; name the columns: UPN (upn, userprincipalname, email, e-mail, mail, teams, teamsupn), SIP URI (sip, sipuri, sip uri, uri) or Extension (extension, ext, dn, number); optional: Account (account), Name (name, displayname, display name); any case`},
	}
	for _, tc := range cases {
		_, _, err := Load(filepath.Join("testdata", tc.file))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tc.file, err, tc.want)
		}
	}
	_, _, err := Load(filepath.Join(t.TempDir(), "users.csv"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "UsersFile") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name, in string
		want     []User
		wantErr  string
	}{
		{"comma LF", "UPN,SIP\nA@B.C,x@pbx\n", []User{{UPN: "a@b.c", SIPURI: "sip:x@pbx", Line: 2}}, ""},
		{"tab", "email\text\n a@b.c \t 7 \n", []User{{UPN: "a@b.c", Extension: "7", Line: 2}}, ""},
		{"UPN beats Email", "Email;UPN;Number\nmail@b.c;upn@b.c;1\n", []User{{UPN: "upn@b.c", Extension: "1", Line: 2}}, ""},
		{"short row", "upn;ext;name\na@b.c;1\n", []User{{UPN: "a@b.c", Extension: "1", Line: 2}}, ""},
		{"schemes", "upn,sip\na@b.c,SIPS:a@pbx\nb@b.c,<sip:b@pbx>\nc@b.c,tel:+4930\n", []User{
			{UPN: "a@b.c", SIPURI: "sips:a@pbx", Line: 2},
			{UPN: "b@b.c", SIPURI: "sip:b@pbx", Line: 3},
			{UPN: "c@b.c", SIPURI: "tel:+4930", Line: 4},
		}, ""},
		{"header only", "upn;ext\r\n", nil, ""},
		{"empty", "\n\n# nothing\n", nil, "empty.csv has no rows"},
		{"no UPN column", "sip;ext\nx;1\n", nil, `empty.csv:1: header row "sip;ext" has no UPN column`},
		{"bad quote", "upn,ext\n\"a@b.c,1\n", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			list, problems, err := Parse(strings.NewReader(tc.in), "empty.csv")
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want prefix %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "bad quote" { // LazyQuotes: the row survives as one odd field, reported not fatal
				if len(list) != 0 || len(problems) != 1 {
					t.Errorf("list %v problems %v", list, problems)
				}
				return
			}
			if len(problems) > 0 {
				t.Errorf("problems %v", problems)
			}
			if !slices.Equal(list, tc.want) {
				t.Errorf("got  %+v\nwant %+v", list, tc.want)
			}
		})
	}
}

// TestOversizedRows: rows from a broken export (a 40,000-character UPN, a 10 MB
// field) are skipped and named by line like other bad rows; the rest load. A UPN
// longer than Entra allows once stopped the service (bbolt: key too large).
func TestOversizedRows(t *testing.T) {
	long := strings.Repeat("x", 40_000) + "@contoso.com"
	csv := "UPN;Extension;Name\n" +
		"a@contoso.com;100;Alice\n" +
		long + ";101;Long\n" +
		strings.Repeat("y", 65) + "@contoso.com;102;Local part too long\n" +
		"c@" + strings.Repeat("d", 49) + ".com;103;Domain too long\n" +
		"e@contoso.com;104;" + strings.Repeat("n", 10<<20) + "\n" +
		"f@contoso.com;" + strings.Repeat("9", 65) + ";Extension too long\n" +
		strings.Repeat("g", 64) + "@" + strings.Repeat("h", 44) + ".com;105;Longest allowed\n"
	list, problems, err := Parse(strings.NewReader(csv), "users.csv")
	if err != nil {
		t.Fatal(err)
	}
	var upns []string
	for _, u := range list {
		upns = append(upns, u.UPN)
	}
	if want := []string{"a@contoso.com", strings.Repeat("g", 64) + "@" + strings.Repeat("h", 44) + ".com"}; !slices.Equal(upns, want) {
		t.Errorf("users %v, want %v", upns, want)
	}
	wantLines := []int{3, 4, 5, 6, 7}
	if len(problems) != len(wantLines) {
		t.Fatalf("problems %v, want lines %v", problems, wantLines)
	}
	for i, p := range problems {
		s := p.String()
		if p.Line != wantLines[i] || len(s) > 300 || !strings.HasPrefix(s, fmt.Sprintf("users.csv:%d: ", wantLines[i])) {
			t.Errorf("problem %d = %.300q (%d bytes), want line %d and a short message", i, s, len(s), wantLines[i])
		}
	}
	for i, want := range []string{"is 40012 characters long; a Teams (Entra ID) UPN has at most 64 before the '@' and 48 after it",
		"is 77 characters long", "is 55 characters long", "the name of \"e@contoso.com\" is 10485760 characters long; at most 256",
		"the extension of \"f@contoso.com\" is 65 characters long; at most 64"} {
		if !strings.Contains(problems[i].Message, want) {
			t.Errorf("problem %d = %q, want it to say %q", i, problems[i].Message, want)
		}
	}
}

// A binary file given as the users file: the error starts with the file's name,
// as every other users-file error does.
func TestBinaryFileNamed(t *testing.T) {
	_, _, err := Parse(strings.NewReader("UPN;Extension\x00\x00\x01"), "users.csv")
	if err == nil || !strings.HasPrefix(err.Error(), "users.csv: not a text file") {
		t.Fatalf("Parse of a binary file = %v", err)
	}
}
