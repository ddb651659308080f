package users

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf16"

	"github.com/presencebridge/presencebridge/internal/platform/textfile"
)

// The fuzz target reads users files as PBX exports and spreadsheets leave them.
// `make test` runs its seeds; `make fuzz` explores from them.

func utf16Of(s string, bigEndian, bom bool) []byte {
	var b []byte
	if bom {
		b = append(b, 0xFF, 0xFE)
		if bigEndian {
			b = []byte{0xFE, 0xFF}
		}
	}
	for _, u := range utf16.Encode([]rune(s)) {
		if bigEndian {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return b
}

// FuzzParse reads any bytes as a users file named users.csv. It never hangs or
// panics; an error starts with the file name; every skipped row is a problem
// "users.csv:N: ..." with N a line of the file; every user it keeps has a
// lower-case UPN of the form user@domain without spaces, a SIP URI (with its
// scheme) or an extension, and a line of its own after the header, and no UPN
// is kept twice.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	export := "UPN;SIP URI;Extension;Name\r\nanna@contoso.com;sip:1001@pbx.contoso.com;1001;Anna Ångström\r\n" +
		"\"Bert \"\"B\"\" Jones\";;1002;Bert\r\nbert@contoso.com;;1002;\"Jones; Bert\"\r\n"
	for _, s := range [][]byte{
		[]byte(export),
		[]byte("\ufeff" + export),
		utf16Of(export, false, true),
		utf16Of(export, true, true),
		utf16Of(export, false, false),                               // UTF-16 without BOM, as some exports write it
		[]byte(strings.ReplaceAll(export, "\r\n", "\r")),            // classic Mac line ends
		bytes.ReplaceAll([]byte(export), []byte("Å"), []byte{0xC5}), // Windows-1252
		[]byte("sep=\t\nupn\text\na@b.c\t1\n"),
		[]byte("sep=|\nupn|ext\na@b.c|1\n"),
		[]byte("upn,ext\n\"a@b.c,1\n"),
		[]byte("upn,ext\n\"a@b.c\"x,1\n"),
		[]byte("upn,ext,name\na@b.c,1,\"multi\nline\"\nb@b.c,2,\n"),
		[]byte("upn,ext\na@b.c,1\x00\n"),
		[]byte("upn;ext\n;;;;\n# comment\nA@B.C ;1\na@b.c;2\n"),
		[]byte("upn;ext\nİ@b.c;1\ni̇@b.c;2\nK@b.c;3\n"), // Unicode case folding
		[]byte("upn;ext\nnbsp\u00a0x@b.c;1\nzero\u200bwidth@b.c;2\n"),
		[]byte("upn;ext\n" + strings.Repeat("a", 40_000) + "@contoso.com;1001\nb@contoso.com;1002\n"),          // a 40,000-character UPN
		[]byte("upn;ext;name\na@contoso.com;1001;" + strings.Repeat("n", 10<<20) + "\nb@contoso.com;1002;B\n"), // a 10 MB row
		[]byte("upn;" + strings.Repeat("x;", 5000) + "ext\na@b.c;" + strings.Repeat(";", 5000) + "1\n"),
		[]byte(""),
		[]byte("\n\n\n"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "users.csv"
		list, problems, err := Parse(bytes.NewReader(data), name)
		text, _, _ := textfile.Decode(data)
		lines := strings.Count(text, "\n") + 1
		if err != nil {
			if list != nil || problems != nil {
				t.Fatalf("an error (%v) and users or problems", err)
			}
			if !strings.HasPrefix(err.Error(), name) {
				t.Fatalf("error %.300q does not start with the file name", err)
			}
			if n, ok := lineOf(err.Error(), name); ok && (n < 1 || n > lines) {
				t.Fatalf("error on line %d of a %d-line file: %.300s", n, lines, err)
			}
			return
		}
		for _, p := range problems {
			if p.File != name || p.Line < 1 || p.Line > lines || p.Message == "" {
				t.Fatalf("problem %+v of a %d-line file", p, lines)
			}
			if prefix := name + ":" + strconv.Itoa(p.Line) + ": "; !strings.HasPrefix(p.String(), prefix) {
				t.Fatalf("problem %.300q does not start with %q", p.String(), prefix)
			}
		}
		seen := map[string]int{}
		last := 0
		for _, u := range list {
			local, domain, _ := strings.Cut(u.UPN, "@")
			switch {
			case u.UPN != strings.ToLower(u.UPN):
				t.Fatalf("UPN %q is not lower case", u.UPN)
			case local == "" || domain == "" || strings.Contains(domain, "@"):
				t.Fatalf("UPN %q is not user@domain", u.UPN)
			case strings.IndexFunc(u.UPN, unicode.IsSpace) >= 0:
				t.Fatalf("UPN %q holds a space", u.UPN)
			case u.SIPURI == "" && u.Extension == "":
				t.Fatalf("user %q has neither SIP URI nor extension", u.UPN)
			case u.SIPURI != "" && !strings.HasPrefix(u.SIPURI, "sip:") && !strings.HasPrefix(u.SIPURI, "sips:") && !strings.HasPrefix(u.SIPURI, "tel:"):
				t.Fatalf("SIP URI %q has no scheme", u.SIPURI)
			case u.Line < 2 || u.Line <= last || u.Line > lines:
				t.Fatalf("user %q on line %d (previous user on line %d, %d lines)", u.UPN, u.Line, last, lines)
			}
			if first, dup := seen[u.UPN]; dup {
				t.Fatalf("UPN %q kept twice (lines %d and %d)", u.UPN, first, u.Line)
			}
			seen[u.UPN] = u.Line
			last = u.Line
		}
		if len(list)+len(problems) >= lines {
			t.Fatalf("%d users and %d problems from %d lines (one is the header)", len(list), len(problems), lines)
		}
	})
}

// lineOf reads N from an error "users.csv:N: ...".
func lineOf(msg, name string) (int, bool) {
	rest, ok := strings.CutPrefix(msg, name+":")
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(n)
	return v, err == nil
}
