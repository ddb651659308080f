package config

import (
	"strings"
	"unicode"
)

// scan is what the pre-pass learns from the raw text: where each key is, how names
// were spelled, and a cleaned copy of the text for ini.v1 (lines it would reject or
// misread are blanked, so line numbers stay the same and parsing carries on).
type scan struct {
	text        string
	keyLines    map[string][]int  // lower(section) + "\x00" + lower(key) -> lines, in order
	rawKey      map[int]string    // line -> key as written
	sectionLine map[string]int    // lower(section) -> line of its first header
	sectionName map[string]string // lower(section) -> name as first written
}

// topSection is the lower-case name ini.v1 gives the keys above the first header.
const topSection = "default"

func scanKey(section, key string) string {
	return strings.ToLower(section) + "\x00" + strings.ToLower(key)
}

// prescan reads text (already decoded, "\n" line ends) line by line the way ini.v1
// does and reports the lines ini.v1 would reject or misread.
func prescan(text string) (*scan, []Problem) {
	sc := &scan{
		keyLines:    map[string][]int{},
		rawKey:      map[int]string{},
		sectionLine: map[string]int{},
		sectionName: map[string]string{},
	}
	var problems []Problem
	bad := func(n int, msg string) { problems = append(problems, Problem{Line: n, Message: msg}) }

	lines := strings.Split(text, "\n")
	out := make([]string, len(lines))
	section, sectionOK := topSection, true
	for i, line := range lines {
		n := i + 1
		t := strings.TrimLeftFunc(line, unicode.IsSpace)
		switch {
		case t == "" || t[0] == ';' || t[0] == '#':
			// blank or comment: ini.v1 need not see it
		case t[0] == '[':
			end := strings.IndexByte(t, ']')
			if end < 0 {
				bad(n, "section header has no closing ]; write it as [Name]; the keys below it are skipped until the next valid header")
				sectionOK = false
				continue
			}
			name := strings.TrimSpace(t[1:end])
			if rest := strings.TrimSpace(t[end+1:]); rest != "" && rest[0] != ';' && rest[0] != '#' {
				bad(n, "text after the section header's ]; put a comment after ; or remove it; the keys below it are skipped until the next valid header")
				sectionOK = false
				continue
			}
			if name == "" {
				bad(n, "empty section name []; write e.g. [General]; the keys below it are skipped until the next valid header")
				sectionOK = false
				continue
			}
			section, sectionOK = strings.ToLower(name), true
			if _, seen := sc.sectionLine[section]; !seen {
				sc.sectionLine[section] = n
				sc.sectionName[section] = name
			}
			out[i] = "[" + name + "]"
		case !sectionOK:
			// under a broken header: reported once already
		default:
			eq := strings.IndexByte(t, '=')
			if eq < 0 {
				bad(n, "not a key = value line, a [Section] header or a comment; start comments with ; or #")
				continue
			}
			key := strings.TrimSpace(t[:eq])
			if key == "" {
				bad(n, "line has no key name before =")
				continue
			}
			if key[0] == '"' || key[0] == '`' || key[0] == '\'' {
				bad(n, "key names are written without quotes, e.g. Interval = 10s")
				continue
			}
			if v := strings.TrimLeftFunc(t[eq+1:], unicode.IsSpace); strings.HasPrefix(v, "`") || strings.HasPrefix(v, `"""`) {
				label := key
				if section != topSection {
					label = "[" + sc.sectionName[section] + "] " + key
				}
				bad(n, label+": a value may not start with ` or \"\"\"; put the whole value in double quotes")
				continue
			}
			k := scanKey(section, key)
			sc.keyLines[k] = append(sc.keyLines[k], n)
			sc.rawKey[n] = key
			out[i] = t
		}
	}
	sc.text = strings.Join(out, "\n")
	return sc, problems
}

// cleanValue turns the text after '=' into the value: an inline comment starts at ';'
// or '#' that begins the value or follows whitespace; a value in matching double or
// single quotes is taken verbatim from between them (so it may hold " ;" or " #").
// Backslashes are never escapes. ok is false for an opening quote without its close.
func cleanValue(raw string) (v string, ok bool) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", true
	}
	if q := raw[0]; q == '"' || q == '\'' {
		for i := len(raw) - 1; i > 0; i-- {
			if raw[i] == q && isBlankOrComment(raw[i+1:]) {
				return raw[1:i], true
			}
		}
		return "", false
	}
	for i := 0; i < len(raw); i++ {
		if (raw[i] == ';' || raw[i] == '#') && (i == 0 || raw[i-1] == ' ' || raw[i-1] == '\t') {
			return strings.TrimSpace(raw[:i]), true
		}
	}
	return raw, true
}

func isBlankOrComment(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || s[0] == ';' || s[0] == '#'
}
