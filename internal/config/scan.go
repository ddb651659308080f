package config

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// scan is what the pre-pass learns from the raw text: where each key is, how names
// were spelled, and a cleaned copy of the text for ini.v1 (lines it would reject or
// misread are blanked, so line numbers stay the same and parsing carries on).
type scan struct {
	text        string
	unknown     []unknownKey      // keys no section of theirs knows, in file order (not passed to ini.v1)
	keyLines    map[string][]int  // lower(section) + "\x00" + lower(key) -> lines, in order
	rawKey      map[int]string    // line -> key as written
	sectionLine map[string]int    // lower(section) -> line of its first header
	sectionName map[string]string // lower(section) -> name as first written
}

// topSection is the lower-case name ini.v1 gives the keys above the first header.
const topSection = "default"

// maxOpenKeys bounds the keys of one open section ([Mapping] rules, [HTTP]
// Header.<Name>): the defaults have about 40 rules, and ini.v1 checks every new
// key against all earlier keys of its section, so a file with hundreds of
// thousands of them would take minutes to read.
const maxOpenKeys = 1000

// unknownKey is a key line whose section has no such key.
type unknownKey struct {
	section string // lower-case section name
	key     string // as written
	line    int
}

// sectionKind is the knownKeys entry of a lower-case section name: "" for the
// top of the file, "account" for [Account.<id>]; ok is false for a section the
// loader reports as unknown (its keys are skipped).
func sectionKind(lower string) (kind string, ok bool) {
	switch {
	case lower == topSection:
		return "", true
	case strings.HasPrefix(lower, "account."):
		return "account", true
	case lower == "account":
		return "", false
	}
	_, ok = knownKeys[lower]
	return lower, ok
}

// isOpenKey reports keys that open sections take by any name (see freeKey).
func isOpenKey(kind, key string) bool {
	return kind == "mapping" || kind == "http" && len(key) >= len("Header.") && strings.EqualFold(key[:len("Header.")], "Header.")
}

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
	openKeys := map[string]map[string]bool{} // lower(section) -> lower(open key) seen
	tooMany := map[string]bool{}             // lower(section) -> maxOpenKeys reported
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
			// Only keys the loader reads go to ini.v1 (see maxOpenKeys): unknown
			// keys are reported from sc.unknown, keys of unknown sections are
			// skipped with their section.
			kind, known := sectionKind(section)
			switch {
			case !known:
				continue
			case isOpenKey(kind, key):
				seen := openKeys[section]
				if seen == nil {
					seen = map[string]bool{}
					openKeys[section] = seen
				}
				if lower := strings.ToLower(key); !seen[lower] {
					if len(seen) >= maxOpenKeys {
						if !tooMany[section] {
							tooMany[section] = true
							bad(n, fmt.Sprintf("[%s] has more than %d keys; this one and the rest are ignored (is this the right file?)", sc.sectionName[section], maxOpenKeys))
						}
						continue
					}
					seen[lower] = true
				}
			case !slices.ContainsFunc(knownKeys[kind], func(k string) bool { return strings.EqualFold(k, key) }):
				sc.unknown = append(sc.unknown, unknownKey{section: section, key: key, line: n})
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
