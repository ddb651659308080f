package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/presencebridge/presencebridge/internal/platform/textfile"
)

// Load reads, parses and validates the Presence.ini at path. Relative paths in it are
// relative to the INI's directory. All problems found are returned together as an
// *Error; a file that cannot be read gives a plain error wrapping the cause.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config file not found: looked for %s; create it from Presence.ini.example (shipped with presencebridge), which shows every key with its default: %w", abs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", abs, err)
	}
	text, _, err := textfile.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", abs, err)
	}
	return parse(abs, text)
}

// parse is Load after reading: abs is the INI's absolute path, text its decoded content.
func parse(abs, text string) (*Config, error) {
	f, problems := scanINI(text)
	l := &loader{path: abs, dir: filepath.Dir(abs), problems: problems}
	cfg := l.build(f)
	if len(l.problems) > 0 {
		sortProblems(l.problems)
		return nil, &Error{Path: abs, Problems: l.problems}
	}
	return cfg, nil
}

// section is one section's keys after cleaning, by lower-case key name.
type section struct {
	name string // display name: "Polling", "Account.main"; "" for the top of the file
	line int    // header line; 0 for the top of the file
	keys map[string]entry
	// Open keys: [Mapping] rules in file order, [HTTP] Header.<Name> by name.
	free    []entry
	headers map[string]entry
}

// entry is one key's value and where it came from.
type entry struct {
	section string // display name of its section
	key     string // canonical spelling
	value   string // cleaned
	line    int    // the line the value came from, else the section's header line
	set     bool   // present with a non-empty value
}

func (s *section) get(key string) entry {
	if e, ok := s.keys[strings.ToLower(key)]; ok {
		return e
	}
	return entry{section: s.name, key: key, line: s.line}
}

func (e entry) label() string {
	if e.section == "" {
		return e.key
	}
	return "[" + e.section + "] " + e.key
}

// shown is the value as it may appear in an error: secrets are "***".
func (e entry) shown() string {
	switch {
	case strings.EqualFold(e.key, "ClientSecret") || isSecretKey(e.section, e.key):
		return redacted
	case strings.EqualFold(e.section, "Proxy") && strings.EqualFold(e.key, "URL"):
		return redactRawURL(e.value)
	case looksLikeSecret(e.value):
		return redacted
	}
	return e.value
}

type loader struct {
	path, dir string
	problems  []Problem
}

func (l *loader) add(line int, format string, args ...any) {
	l.problems = append(l.problems, Problem{Line: line, Message: fmt.Sprintf(format, args...)})
}

// bad reports a value that is not allowed: `[Sec] Key = "value": why; what is allowed`.
func (l *loader) bad(e entry, format string, args ...any) {
	l.add(e.line, "%s = %q: %s", e.label(), e.shown(), fmt.Sprintf(format, args...))
}

// build walks the scanned sections into a Config, reporting every problem on the way.
func (l *loader) build(f *iniFile) *Config {
	secs := map[string]*section{}
	var accountOrder []string
	for _, s := range f.sections {
		kind, display := s.id, s.name
		switch {
		case s.id == topSection:
			kind, display = "", ""
		case s.id == "account":
			l.add(s.line, "section [%s] needs an account id: write [Account.<id>], e.g. [Account.main]", s.name)
			continue
		case strings.HasPrefix(s.id, "account."):
			kind = "account"
			display = "Account." + strings.TrimSpace(s.name[len("account."):])
		case knownKeys[s.id] == nil:
			l.unknownSection(s.name, s.line)
			continue
		default:
			display = knownSections[slices.IndexFunc(knownSections, func(n string) bool { return strings.EqualFold(n, s.id) })]
		}
		sec := &section{name: display, line: s.line, keys: map[string]entry{}}
		secs[s.id] = sec
		if kind == "account" {
			accountOrder = append(accountOrder, s.id)
		}
		l.readKeys(sec, kind, s)
	}
	empty := func(name string) *section {
		if s := secs[strings.ToLower(name)]; s != nil {
			return s
		}
		return &section{name: name, keys: map[string]entry{}}
	}

	cfg := &Config{Path: l.path, Dir: l.dir}
	l.legacy(cfg, secs[topSection])
	l.general(cfg, empty("General"))
	l.microsoft(cfg, empty("Microsoft"))
	l.proxy(cfg, empty("Proxy"))
	l.polling(cfg, empty("Polling"))
	l.sip(cfg, empty("SIP"))
	l.http(cfg, empty("HTTP"))
	l.asterisk(cfg, empty("Asterisk"))
	l.delivery(cfg, empty("Delivery"))
	l.mapping(cfg, empty("Mapping"))
	l.pbx(cfg, empty("PBX"))
	var accountSecs []*section
	for _, id := range accountOrder {
		if a, ok := l.account(cfg, secs[id]); ok {
			cfg.Accounts = append(cfg.Accounts, a)
			accountSecs = append(accountSecs, secs[id])
		}
	}
	l.crossAccounts(cfg.Accounts, accountSecs)
	l.crossPBX(cfg, empty("PBX"), empty("SIP"))
	if cfg.TeamsEnabled && len(accountOrder) == 0 {
		l.add(0, "no [Account.<id>] section, but %s = 1; add one with TenantID and ClientID (Presence.ini.example shows how), or set %s = 0 to run without Teams",
			keyTeamsEnable, keyTeamsEnable)
	}
	return cfg
}

// maxOpenKeys bounds the keys of one open section ([Mapping] rules, [HTTP]
// Header.<Name>): the defaults have about 40 rules, so a section with more than
// a thousand is a wrong file (a log, an export), and one problem says so for the
// rest instead of one a line.
const maxOpenKeys = 1000

// readKeys files the keys of s under sec, of the kind of section kind (see
// knownKeys), reporting unknown and repeated keys. A key set more than once
// takes its last value.
func (l *loader) readKeys(sec *section, kind string, s *iniSection) {
	open := 0 // distinct open keys read
	for _, k := range s.keys {
		last := k.sets[len(k.sets)-1]
		name, known := knownKeyIDs[kind][k.id]
		switch {
		case !known && !isOpenKey(kind, k.id):
			for _, set := range k.sets {
				l.unknownKey(sec, kind, set.key, set.line)
			}
		case !known:
			if open++; open > maxOpenKeys {
				if open == maxOpenKeys+1 {
					l.add(k.sets[0].line, "[%s] has more than %d keys; this one and the rest are ignored (is this the right file?)", s.name, maxOpenKeys)
				}
				continue
			}
			v, ok := cleanValue(last.value)
			if !ok {
				l.add(last.line, "[%s] %s: the value starts with a quote that is not closed; close it at the end of the value, or remove it", sec.name, last.key)
			} else if !l.freeKey(sec, kind, last.key, v, last.line) {
				l.unknownKey(sec, kind, last.key, last.line)
			}
		default:
			e := entry{section: sec.name, key: name, line: last.line}
			for _, later := range k.sets[1:] {
				l.add(later.line, "%s is set more than once (first on line %d); keep one", e.label(), k.sets[0].line)
			}
			v, ok := cleanValue(last.value)
			if !ok {
				// The value is not shown: it may be a secret, and the message is clear without it.
				l.add(last.line, "%s: the value starts with a quote that is not closed; close it at the end of the value, or remove it", e.label())
			} else {
				e.value, e.set = v, v != ""
			}
			sec.keys[k.id] = e
		}
	}
}

// isOpenKey reports the keys that open sections take by any name (see freeKey);
// id is the lower-case key.
func isOpenKey(kind, id string) bool {
	return kind == "mapping" || kind == "http" && strings.HasPrefix(id, "header.")
}

func (l *loader) unknownSection(name string, line int) {
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "account") {
		id := strings.TrimLeft(name[len("account"):], " .:_-")
		if i := strings.IndexByte(name, '.'); i > 0 && suggest(name[:i], []string{"Account"}) != "" {
			id = strings.TrimSpace(name[i+1:])
		}
		if id == "" {
			id = "<id>"
		}
		l.add(line, "unknown section [%s]; did you mean [Account.%s]?", name, id)
		return
	}
	if i := strings.IndexByte(name, '.'); i > 0 && suggest(name[:i], []string{"Account"}) != "" {
		l.add(line, "unknown section [%s]; did you mean [Account.%s]?", name, strings.TrimSpace(name[i+1:]))
		return
	}
	if s := suggest(name, knownSections); s != "" {
		if s == "Account" {
			s = "Account.<id>"
		}
		l.add(line, "unknown section [%s]; did you mean [%s]?", name, s)
		return
	}
	l.add(line, "unknown section [%s]; the sections are [General], [Microsoft], [Proxy], [Polling], [Account.<id>], [SIP], [HTTP], [Asterisk], [Delivery], [Mapping] and [PBX]", name)
}

func (l *loader) unknownKey(sec *section, kind, written string, line int) {
	where := "at the top of the file"
	if sec.name != "" {
		where = "in [" + sec.name + "]"
	}
	// A known key of this section that ends with what was written (Expires in
	// [PBX] is SubscribeExpires; [SIP] has an Expires of its own).
	if s := bySuffix(written, knownKeys[kind]); s != "" {
		also := ""
		if o := sectionOf(written, kind); o != "" {
			also = fmt.Sprintf(" (%s is a key of %s)", written, o)
		}
		l.add(line, "unknown key %q %s; did you mean %q?%s", written, where, s, also)
		return
	}
	// A known key in the wrong place: say where it belongs.
	if o := sectionOf(written, kind); o != "" {
		if o == "the top of the file" {
			l.add(line, "%s does not belong %s; it is a legacy key and goes at the top of the file, before the first [section]", written, where)
		} else {
			l.add(line, "%s does not belong %s; it goes in %s", written, where, o)
		}
		return
	}
	if s := suggest(written, knownKeys[kind]); s != "" {
		l.add(line, "unknown key %q %s; did you mean %q?", written, where, s)
		return
	}
	l.add(line, "unknown key %q %s; the keys there are %s", written, where, strings.Join(knownKeys[kind], ", "))
}

// sectionOf names the section other than kind that has the key written, as a
// message says it ("[SIP]", "an [Account.<id>] section", "the top of the
// file"), or "". [PBX] looks in [SIP] first: the watch uses its connection.
func sectionOf(written, kind string) string {
	order := []string{"", "general", "microsoft", "proxy", "polling", "account", "sip", "http", "asterisk", "delivery", "pbx"}
	if kind == "pbx" {
		order = append([]string{"sip"}, order...)
	}
	for _, other := range order {
		if other == kind || !slices.ContainsFunc(knownKeys[other], func(n string) bool { return strings.EqualFold(n, written) }) {
			continue
		}
		switch other {
		case "":
			return "the top of the file"
		case "account":
			return "an [Account.<id>] section"
		default:
			return "[" + knownSections[slices.IndexFunc(knownSections, func(n string) bool { return strings.EqualFold(n, other) })] + "]"
		}
	}
	return ""
}

// bySuffix returns the one key of keys that ends with written (at least four
// letters, case-insensitive), or "".
func bySuffix(written string, keys []string) string {
	if len(written) < 4 {
		return ""
	}
	found := ""
	for _, k := range keys {
		if len(k) > len(written) && strings.EqualFold(k[len(k)-len(written):], written) {
			if found != "" {
				return ""
			}
			found = k
		}
	}
	return found
}

// freeKey files a key of a section whose keys are open ([Mapping], and [HTTP]'s
// Header.<Name>). It reports false when kind has no open keys.
func (l *loader) freeKey(sec *section, kind, written string, value string, line int) bool {
	switch {
	case kind == "mapping":
		sec.free = append(sec.free, entry{section: sec.name, key: written, value: value, line: line, set: true})
		return true
	case kind == "http" && len(written) > len("Header.") && strings.EqualFold(written[:len("Header.")], "Header."):
		name := strings.TrimSpace(written[len("Header."):])
		if name == "" || strings.ContainsAny(name, " :\t") {
			l.add(line, "[%s] %s: not a header name; write Header.<Name> = value, e.g. Header.Authorization = Bearer <token>", sec.name, written)
			return true
		}
		if sec.headers == nil {
			sec.headers = map[string]entry{}
		}
		sec.headers[name] = entry{section: sec.name, key: written, value: value, line: line, set: value != ""}
		return true
	}
	return false
}
