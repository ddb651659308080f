package config

import (
	"strings"
	"unicode"
)

// iniFile is Presence.ini as scanINI reads it: its sections with their keys and
// values, and the line each came from. The loader reads its keys from it and
// `config set` finds in it where to write.
type iniFile struct {
	// sections are in the order of their first header; sections[0] is the top
	// of the file.
	sections []*iniSection
	byID     map[string]*iniSection
	// headers are the lines that start with '[', valid headers or not, in order:
	// a section's part ends before the next one.
	headers []int
}

// iniSection is one section: every part of the file under a header of its name
// (names match case-insensitively, so [SIP] and [sip] are one section).
type iniSection struct {
	name string // as first written; "" for the top of the file
	id   string // the lower-case name; topSection for the top of the file
	line int    // the first header's line; 0 for the top of the file
	// parts are the header line of each part, in order; 0 is the top of the
	// file above the first header.
	parts []int
	// keys are the keys the loader reads, in the order of their first such line.
	keys []*iniKey
	byID map[string]*iniKey // by lower-case name, including keys no line of which is read
}

// iniKey is one key of a section: every line that sets it (names match
// case-insensitively).
type iniKey struct {
	id string // the lower-case name
	// first is the first line that names the key, read or not: `config set`
	// rewrites that one, so it can fix a value the loader refused to read.
	first keyLine
	// sets are the lines the loader reads, in order: the last one wins, the
	// others are reported as repeated.
	sets []keyLine
}

// keyLine is one "key = value" line.
type keyLine struct {
	line  int
	key   string // as written
	value string // the text after '=', trimmed; cleanValue turns it into the value
}

// topSection is the id of the keys above the first header. A [Default] header
// continues them, as it did when gopkg.in/ini.v1 read the file (its DEFAULT
// section), so files written for that reader load the same.
const topSection = "default"

// scanINI reads text (decoded, "\n" line ends) line by line. It reports what is
// not INI syntax as Presence.ini has it; those lines are not read, and the keys
// under a header it could not read are skipped until the next header. Comment
// lines start with ';' or '#'; a key line is "key = value" (the first '=' ends the
// key); values are read by cleanValue. Nothing is a continuation, an escape or a
// multi-line value, and a key set twice is left for the loader to report.
func scanINI(text string) (*iniFile, []Problem) {
	return scanLines(strings.Split(text, "\n"))
}

// scanLines is scanINI for text already split into lines.
func scanLines(lines []string) (*iniFile, []Problem) {
	f := &iniFile{byID: map[string]*iniSection{}}
	top := f.section(topSection, "", 0)
	top.parts = []int{0}
	var problems []Problem
	bad := func(n int, msg string) { problems = append(problems, Problem{Line: n, Message: msg}) }

	sec := top // nil under a header that could not be read
	for i, line := range lines {
		n := i + 1
		t := strings.TrimLeftFunc(line, unicode.IsSpace)
		switch {
		case t == "" || t[0] == ';' || t[0] == '#':
			// blank or comment
		case t[0] == '[':
			f.headers = append(f.headers, n)
			sec = nil
			end := strings.IndexByte(t, ']')
			if end < 0 {
				bad(n, "section header has no closing ]; write it as [Name]; the keys below it are skipped until the next valid header")
				continue
			}
			name := strings.TrimSpace(t[1:end])
			if rest := strings.TrimSpace(t[end+1:]); rest != "" && rest[0] != ';' && rest[0] != '#' {
				bad(n, "text after the section header's ]; put a comment after ; or remove it; the keys below it are skipped until the next valid header")
				continue
			}
			if name == "" {
				bad(n, "empty section name []; write e.g. [General]; the keys below it are skipped until the next valid header")
				continue
			}
			sec = f.section(strings.ToLower(name), name, n)
			sec.parts = append(sec.parts, n)
		case sec == nil:
			// under a header that could not be read: reported once already
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
			kl := keyLine{line: n, key: key, value: strings.TrimSpace(t[eq+1:])}
			k := sec.key(strings.ToLower(key), kl)
			// A value in backquotes or triple quotes (other INI dialects' raw
			// and multi-line strings) is refused, not read as something else.
			if strings.HasPrefix(kl.value, "`") || strings.HasPrefix(kl.value, `"""`) {
				label := key
				if sec != top {
					label = "[" + sec.name + "] " + key
				}
				bad(n, label+": a value may not start with ` or \"\"\"; put the whole value in double quotes")
				continue
			}
			if len(k.sets) == 0 {
				sec.keys = append(sec.keys, k)
			}
			k.sets = append(k.sets, kl)
		}
	}
	return f, problems
}

// section returns the section id, made with its name and first header line if
// it is new.
func (f *iniFile) section(id, name string, line int) *iniSection {
	if s := f.byID[id]; s != nil {
		if s.line == 0 {
			s.line = line // the top of the file's first [Default] header
		}
		return s
	}
	s := &iniSection{name: name, id: id, line: line, byID: map[string]*iniKey{}}
	f.sections = append(f.sections, s)
	f.byID[id] = s
	return s
}

// key returns the key id, made with kl as its first line if it is new.
func (s *iniSection) key(id string, kl keyLine) *iniKey {
	k := s.byID[id]
	if k == nil {
		k = &iniKey{id: id, first: kl}
		s.byID[id] = k
	}
	return k
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
