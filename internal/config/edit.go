package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/platform/textfile"
)

// Setting is one key to set: Key is "Section.Key" ("Account.main.TenantID",
// "SIP.Server") or a legacy top-of-file key ("MSTeamsPresence.Enable").
type Setting struct{ Key, Value string }

// Set writes settings into the Presence.ini at path in place: the key's line is
// rewritten, or the key is added at the end of its section, or the section at the
// end of the file; comments, order and line endings stay. Secrets (ClientSecret,
// [SIP] Password, [Proxy] Password, [HTTP] Header.*, [Asterisk] Password and
// Secret) are written encrypted. The result must load:
// if it would not, nothing is written and the error says why.
func Set(path string, settings []Setting) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(abs)
	if err != nil {
		return fmt.Errorf("read config %s: %w", abs, err)
	}
	text, enc, err := textfile.Decode(raw)
	if err != nil {
		return fmt.Errorf("read config %s: %w", abs, err)
	}
	lines := strings.Split(text, "\n")
	for _, s := range settings {
		section, key, err := splitSettingKey(s.Key)
		if err != nil {
			return err
		}
		value := s.Value
		if problem := unwritable(value); problem != "" {
			what := "the value"
			if !isSecretKey(section, key) {
				what = fmt.Sprintf("the value %q", value)
			}
			return fmt.Errorf("%s: not written: %s %s; a Presence.ini value is one line of text", s.Key, what, problem)
		}
		if isSecretKey(section, key) && value != "" && !secret.IsEncrypted(value) {
			if value, err = secret.Encrypt(value, filepath.Dir(abs)); err != nil {
				return fmt.Errorf("encrypt %s: %w", s.Key, err)
			}
		}
		lines = setLine(lines, section, key, quoteValue(value))
	}
	text = strings.Join(lines, "\n")
	out := text
	if bytes.Contains(raw, []byte("\r\n")) {
		out = strings.ReplaceAll(text, "\n", "\r\n")
	}
	if enc == textfile.UTF8BOM || enc == textfile.UTF16LE || enc == textfile.UTF16BE {
		out = "\ufeff" + out // Notepad reads UTF-8 with a BOM as it read the UTF-16
	}
	// What is checked is the file as Load will read it back, bytes and all.
	back, _, err := textfile.Decode([]byte(out))
	if err == nil {
		_, err = parse(abs, back)
	}
	if err != nil {
		return fmt.Errorf("not written: %w", err)
	}
	// Written in place, so the file keeps its owner, group and mode.
	return os.WriteFile(abs, []byte(out), 0o600)
}

// unwritable says why v cannot be a value on a Presence.ini line, or "".
func unwritable(v string) string {
	if !utf8.ValidString(v) {
		return "is not UTF-8 text"
	}
	for _, r := range v {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fmt.Sprintf("holds a control character (%U)", r)
		}
	}
	return ""
}

// splitSettingKey splits "Account.main.TenantID" into the section "Account.main"
// and the key "TenantID"; a legacy key has the section "".
func splitSettingKey(k string) (section, key string, err error) {
	for _, legacy := range knownKeys[""] {
		if strings.EqualFold(k, legacy) {
			return "", legacy, nil
		}
	}
	i := strings.LastIndex(k, ".")
	// Header.<Name> keys of [HTTP] hold a dot themselves.
	if j := strings.Index(strings.ToLower(k), ".header."); j > 0 {
		i = j
	}
	if i <= 0 || i == len(k)-1 {
		return "", "", fmt.Errorf("%q: write Section.Key=Value, e.g. Account.main.TenantID=contoso.onmicrosoft.com or SIP.Server=pbx.example.com", k)
	}
	section, key = k[:i], k[i+1:]
	lower := strings.ToLower(section)
	if strings.HasPrefix(lower, "account.") {
		lower = "account"
		section = "Account" + section[len("account"):]
	}
	if _, ok := knownKeys[lower]; !ok {
		return "", "", fmt.Errorf("%q: there is no [%s] section; the sections are %s and Account.<name>", k, section, strings.Join(knownSections, ", "))
	}
	// A section or key that is added is written as the documentation spells it.
	if j := slices.IndexFunc(knownSections, func(n string) bool { return strings.EqualFold(n, section) }); j >= 0 {
		section = knownSections[j]
	}
	if name, ok := knownKeyIDs[lower][strings.ToLower(key)]; ok {
		key = name
	}
	return section, key, nil
}

func isSecretKey(section, key string) bool {
	s, k := strings.ToLower(section), strings.ToLower(key)
	return (strings.HasPrefix(s, "account.") && k == "clientsecret") ||
		(s == "sip" && k == "password") ||
		(s == "proxy" && k == "password") ||
		(s == "http" && strings.HasPrefix(k, "header.")) ||
		(s == "asterisk" && (k == "password" || k == "secret"))
}

// quoteValue puts v in double quotes when it would otherwise read differently.
func quoteValue(v string) string {
	if v != strings.TrimSpace(v) || strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "'") ||
		strings.HasPrefix(v, ";") || strings.HasPrefix(v, "#") ||
		strings.Contains(v, " ;") || strings.Contains(v, " #") || strings.Contains(v, "\t;") || strings.Contains(v, "\t#") {
		return `"` + v + `"`
	}
	return v
}

// setLine sets key in section ("" = before the first section) within lines: it
// rewrites the first line that names the key in that section, or adds the key
// after the last non-blank line of the section's last part, or adds the section
// at the end.
func setLine(lines []string, section, key, value string) []string {
	f, _ := scanLines(lines) // Set loads the result, which reports what is wrong
	id := strings.ToLower(section)
	if section == "" {
		id = topSection
	}
	sec := f.byID[id]
	if sec == nil {
		for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
			lines = lines[:len(lines)-1]
		}
		return append(lines, "", "["+section+"]", key+" = "+value, "")
	}
	if k := sec.byID[strings.ToLower(key)]; k != nil {
		lines[k.first.line-1] = k.first.key + " = " + value
		return lines
	}
	// The last part: from its header (or the top of the file) to the line before
	// the next header.
	header := sec.parts[len(sec.parts)-1] // a line number; 0 for the top of the file
	start, end := max(header-1, 0), len(lines)-1
	for _, h := range f.headers {
		if h > header {
			end = h - 2
			break
		}
	}
	at := end
	for at > start && strings.TrimSpace(lines[at]) == "" {
		at--
	}
	out := append([]string{}, lines[:at+1]...)
	out = append(out, key+" = "+value)
	return append(out, lines[at+1:]...)
}
