package users

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/presencebridge/presencebridge/internal/platform/textfile"
)

// maxFileSize bounds what Parse reads: 50,000 users take a few MB.
const maxFileSize = 64 << 20

// Problem is a row of the users file that was skipped, and why.
type Problem struct {
	File    string // base name of the users file, e.g. "users.csv"
	Line    int    // 1-based line of the row
	UPN     string // the row's UPN, lower case, if it had one
	Message string // what is wrong and what happens, without file and line
}

// String reads like `users.csv:7: duplicate UPN "a@b.c" (first on line 3); this row is ignored`.
func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
}

// Load reads the users file at path (see Parse).
func Load(path string) (list []User, problems []Problem, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("users file not found: looked for %s; create it (a CSV with a header row, e.g. UPN;Extension) or set [General] UsersFile in Presence.ini: %w", path, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read users file: %w", err)
	}
	defer f.Close()
	return Parse(f, filepath.Base(path))
}

// column is a field of User that the users file can fill.
type column int

const (
	colUPN column = iota
	colSIP
	colExtension
	colAccount
	colName
	numColumns
)

// headerAliases are the accepted header names per column, normalised (lower case,
// without spaces, '-', '_' and '.'), best first: when two columns name the same field
// (an export with both "UPN" and "Email"), the better name wins.
var headerAliases = [numColumns][]string{
	colUPN:       {"upn", "userprincipalname", "teamsupn", "teams", "email", "mail"},
	colSIP:       {"sipuri", "sip", "uri"},
	colExtension: {"extension", "ext", "dn", "number"},
	colAccount:   {"account"},
	colName:      {"name", "displayname"},
}

// allowedHeaders is the help text listing the header names as people write them.
const allowedHeaders = "UPN (upn, userprincipalname, email, e-mail, mail, teams, teamsupn), " +
	"SIP URI (sip, sipuri, sip uri, uri) or Extension (extension, ext, dn, number); " +
	"optional: Account (account), Name (name, displayname, display name); any case"

func normalizeHeader(h string) string {
	h = strings.Trim(strings.TrimSpace(h), "\uFEFF\"'")
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '_', '.', '\t':
			return -1
		}
		return unicode.ToLower(r)
	}, h)
}

// matchHeader returns the column a header names and the alias's rank (0 best).
func matchHeader(h string) (column, int, bool) {
	n := normalizeHeader(h)
	for c, aliases := range headerAliases {
		for rank, a := range aliases {
			if n == a {
				return column(c), rank, true
			}
		}
	}
	return 0, 0, false
}

// Parse reads a users file, as a field engineer makes it from a PBX export or an
// Excel sheet: CSV with a header row; comma, semicolon (European Excel) or tab
// separated (detected, or given by Excel's "sep=;" first line); UTF-8 with or
// without BOM or UTF-16 with BOM; CRLF or LF. Header names are matched
// case-insensitively (see allowedHeaders); other columns are ignored. Blank lines and
// lines starting with '#' are skipped.
//
// Rows with an empty or malformed UPN, with neither SIP URI nor extension, or
// repeating an earlier UPN are skipped and returned as problems; the other rows carry
// on. err is for a file that cannot be used at all (unreadable, no usable header).
// name is the file's name for messages.
func Parse(r io.Reader, name string) (list []User, problems []Problem, err error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxFileSize {
		return nil, nil, fmt.Errorf("%s is larger than %d MB; is it the right file?", name, maxFileSize>>20)
	}
	text, _, err := textfile.Decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w; is it the right file?", name, err)
	}

	delim, text := excelSeparator(text)
	headerLine, header := firstContentLine(text)
	if headerLine == 0 {
		return nil, nil, fmt.Errorf("%s has no rows; it needs a header row naming the columns, %s, then one row per user", name, allowedHeaders)
	}
	if delim == 0 {
		delim = detectDelimiter(header)
	}

	cr := csv.NewReader(strings.NewReader(text))
	cr.Comma = delim
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true

	var idx [numColumns]int
	headerSeen := false
	first := map[string]int{} // UPN -> line of its first row
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, nil, fmt.Errorf("%s:%d: not readable as CSV (%v); check the quotes on this line", name, pe.StartLine, pe.Err)
			}
			return nil, nil, fmt.Errorf("read %s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		if blankRecord(rec) {
			continue
		}
		if !headerSeen {
			headerSeen = true
			if idx, err = headerColumns(rec, name, line, delim); err != nil {
				return nil, nil, err
			}
			continue
		}
		get := func(c column) string {
			if i := idx[c]; i >= 0 && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		u := User{
			UPN:       strings.ToLower(get(colUPN)),
			SIPURI:    normalizeSIPURI(get(colSIP)),
			Extension: get(colExtension),
			Account:   get(colAccount),
			Name:      get(colName),
			Line:      line,
		}
		if msg := checkRow(u, first); msg != "" {
			upn := u.UPN
			if len(upn) > MaxUPNLocal+1+MaxUPNDomain {
				upn = ""
			}
			problems = append(problems, Problem{File: name, Line: line, UPN: upn, Message: msg})
			continue
		}
		first[u.UPN] = line
		list = append(list, u)
	}
	return list, problems, nil
}

// Field limits. A UPN is at most 113 characters in Entra ID: 64 before the "@"
// and 48 after (Entra "Password policies and account restrictions", username
// policies). The UPN and the SIP URI are keys in the state file, whose keys may
// not exceed 32 KB (bbolt's MaxKeySize): a row beyond these limits is an export
// gone wrong, refused here rather than failing the state file later.
const (
	MaxUPNLocal  = 64
	MaxUPNDomain = 48
	MaxSIPURI    = 512
	MaxExtension = 64
	MaxName      = 256
	MaxAccount   = 64
)

// checkRow returns why u cannot be used, or "".
func checkRow(u User, first map[string]int) string {
	const ignored = "; this row is ignored"
	local, domain, hasAt := strings.Cut(u.UPN, "@")
	upn := quoteShort(u.UPN)
	switch {
	case u.UPN == "":
		return "empty UPN; fill in the user's Teams sign-in name (usually the e-mail address)" + ignored
	case !hasAt && len(u.UPN) <= MaxUPNLocal:
		return fmt.Sprintf("UPN %s has no '@'; use the Teams sign-in name, e.g. %s@contoso.com", upn, u.UPN) + ignored
	case len(local) > MaxUPNLocal || len(domain) > MaxUPNDomain:
		return fmt.Sprintf("UPN %s is %d characters long; a Teams (Entra ID) UPN has at most %d before the '@' and %d after it",
			upn, len(u.UPN), MaxUPNLocal, MaxUPNDomain) + ignored
	case local == "" || domain == "" || strings.Contains(domain, "@") || strings.IndexFunc(u.UPN, unicode.IsSpace) >= 0:
		return fmt.Sprintf("UPN %s is not of the form user@domain", upn) + ignored
	case u.SIPURI == "" && u.Extension == "":
		return fmt.Sprintf("%s has neither a SIP URI nor an extension; fill in one of them", upn) + ignored
	case len(u.SIPURI) > MaxSIPURI:
		return tooLong(u.UPN, "SIP URI", len(u.SIPURI), MaxSIPURI) + ignored
	case len(u.Extension) > MaxExtension:
		return tooLong(u.UPN, "extension", len(u.Extension), MaxExtension) + ignored
	case len(u.Name) > MaxName:
		return tooLong(u.UPN, "name", len(u.Name), MaxName) + ignored
	case len(u.Account) > MaxAccount:
		return tooLong(u.UPN, "account", len(u.Account), MaxAccount) + ignored
	}
	if line, dup := first[u.UPN]; dup {
		return fmt.Sprintf("duplicate UPN %s (first on line %d)", upn, line) + ignored
	}
	return ""
}

func tooLong(upn, field string, n, limit int) string {
	return fmt.Sprintf("the %s of %s is %d characters long; at most %d are allowed", field, quoteShort(upn), n, limit)
}

// quoteShort quotes v for a message, cut to its first 60 characters: a broken
// export's 40,000-character "UPN" must not make a 40,000-character log line.
func quoteShort(v string) string {
	const keep = 60
	if len(v) <= keep {
		return strconv.Quote(v)
	}
	cut := keep
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return strconv.Quote(v[:cut]) + "..."
}

// headerColumns maps the header row to column indexes (-1: absent) or explains
// what is missing.
func headerColumns(rec []string, name string, line int, delim rune) ([numColumns]int, error) {
	var idx, rank [numColumns]int
	for c := range idx {
		idx[c], rank[c] = -1, -1
	}
	for i, h := range rec {
		c, r, ok := matchHeader(h)
		if ok && (idx[c] < 0 || r < rank[c]) {
			idx[c], rank[c] = i, r
		}
	}
	if idx[colUPN] >= 0 && (idx[colSIP] >= 0 || idx[colExtension] >= 0) {
		return idx, nil
	}
	found := strings.Join(rec, string(delim))
	for _, h := range rec {
		if strings.Contains(h, "@") {
			return idx, fmt.Errorf("%s:%d: the first row %q looks like a user, not a header; add a header row naming the columns: %s",
				name, line, found, allowedHeaders)
		}
	}
	var missing string
	switch {
	case idx[colUPN] < 0 && idx[colSIP] < 0 && idx[colExtension] < 0:
		missing = "no UPN column and no SIP URI or Extension column"
	case idx[colUPN] < 0:
		missing = "no UPN column"
	default:
		missing = "no SIP URI or Extension column"
	}
	return idx, fmt.Errorf("%s:%d: header row %q has %s; name the columns: %s", name, line, found, missing, allowedHeaders)
}

// excelSeparator handles Excel's optional first line "sep=;": it returns the
// separator and the text with that line blanked (line numbers stay the same).
func excelSeparator(text string) (rune, string) {
	first, rest, _ := strings.Cut(text, "\n")
	f := strings.TrimSpace(first)
	if len(f) == 5 && strings.EqualFold(f[:4], "sep=") && strings.ContainsRune(",;\t|", rune(f[4])) {
		return rune(f[4]), "\n" + rest
	}
	return 0, text
}

// firstContentLine returns the first line that is neither blank nor a comment.
func firstContentLine(text string) (int, string) {
	for i, l := range strings.Split(text, "\n") {
		if strings.Trim(l, ",;\t \"") != "" && !strings.HasPrefix(l, "#") {
			return i + 1, l
		}
	}
	return 0, ""
}

// detectDelimiter picks the separator that splits the header into the most known
// column names, then into the most columns; comma wins a tie.
func detectDelimiter(header string) rune {
	best, bestKnown, bestFields := ',', -1, -1
	for _, d := range []rune{',', ';', '\t'} {
		cr := csv.NewReader(strings.NewReader(header))
		cr.Comma, cr.LazyQuotes, cr.FieldsPerRecord = d, true, -1
		rec, err := cr.Read()
		if err != nil {
			continue
		}
		known := 0
		for _, h := range rec {
			if _, _, ok := matchHeader(h); ok {
				known++
			}
		}
		if known > bestKnown || (known == bestKnown && len(rec) > bestFields) {
			best, bestKnown, bestFields = d, known, len(rec)
		}
	}
	return best
}

func blankRecord(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

// normalizeSIPURI gives a SIP URI its scheme ("sip:" if none) in lower case and
// drops surrounding <>.
func normalizeSIPURI(v string) string {
	v = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">"))
	if v == "" {
		return ""
	}
	for _, scheme := range []string{"sip:", "sips:", "tel:"} {
		if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) {
			return scheme + v[len(scheme):]
		}
	}
	return "sip:" + v
}
