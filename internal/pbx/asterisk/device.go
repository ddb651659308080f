package asterisk

import (
	"fmt"
	"strings"

	"github.com/presencebridge/presencebridge/internal/users"
)

// MaxDeviceName is the longest device name (without its Stasis: or Custom:
// prefix) presencebridge sets. Asterisk 22 takes 250 characters over ARI and
// more over AMI, and truncates longer ones into a device no hint names; 128 is
// room for teams-{upn} with every UPN Entra allows (at most 113 characters).
const MaxDeviceName = 128

// Fields of a device name template.
const (
	FieldExtension = "{extension}" // the users file's extension
	FieldUPN       = "{upn}"       // the user's UPN
	FieldUser      = "{user}"      // the user part of the users file's SIP URI
)

// nameChars are the characters a device name may hold: a hint separates its
// devices with & and the dialplan its arguments with commas, a colon starts the
// technology, and the name travels in an ARI URL's path.
const nameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+"

// Device is a parsed [Asterisk] Device template: literal text and fields.
type Device struct {
	template string
	parts    []string // literal text, or one of the Field* constants
}

// ParseDevice checks a device name template such as "teams-{extension}". The
// error says what is wrong and what is allowed (config adds the file, line
// and key).
func ParseDevice(template string) (Device, error) {
	d := Device{template: template}
	lower := strings.ToLower(template)
	if i := strings.IndexByte(lower, ':'); i >= 0 {
		if p := lower[:i]; p == "stasis" || p == "custom" {
			return d, fmt.Errorf("leave out the %s: prefix; presencebridge adds Stasis: (ARI) or Custom: (AMI) itself, and the hints name e.g. Stasis:teams-1000", template[:i])
		}
	}
	rest := template
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if close := strings.IndexByte(rest, '}'); close >= 0 && (open < 0 || close < open) {
			return d, fmt.Errorf("a } without its {; the fields are %s, %s and %s", FieldExtension, FieldUPN, FieldUser)
		}
		if open < 0 {
			d.parts = append(d.parts, rest)
			break
		}
		if open > 0 {
			d.parts = append(d.parts, rest[:open])
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return d, fmt.Errorf("a { without its }; the fields are %s, %s and %s", FieldExtension, FieldUPN, FieldUser)
		}
		field := strings.ToLower(rest[open : open+end+1])
		switch field {
		case FieldExtension, FieldUPN, FieldUser:
			d.parts = append(d.parts, field)
		default:
			return d, fmt.Errorf("unknown field %s; the fields are %s (the users file's extension), %s and %s (the user part of the SIP URI)",
				rest[open:open+end+1], FieldExtension, FieldUPN, FieldUser)
		}
		rest = rest[open+end+1:]
	}
	fields := 0
	for _, p := range d.parts {
		if isField(p) {
			fields++
		} else if bad := strings.Trim(p, nameChars); bad != "" {
			return d, fmt.Errorf("%q cannot be part of a device name (a hint separates devices with & and arguments with commas); use letters, digits and - _ . @ +", bad[:1])
		}
	}
	if fields == 0 {
		return d, fmt.Errorf("no field, so every user would get the same device; put %s, %s or %s in it, e.g. teams-%s", FieldExtension, FieldUPN, FieldUser, FieldExtension)
	}
	return d, nil
}

func isField(p string) bool { return p == FieldExtension || p == FieldUPN || p == FieldUser }

// String is the template as written.
func (d Device) String() string { return d.template }

// Name is u's device name, without the Stasis:/Custom: prefix, or why u has
// none (an empty field, a character or length no hint can carry).
func (d Device) Name(u users.User) (string, error) {
	var b strings.Builder
	for _, p := range d.parts {
		if !isField(p) {
			b.WriteString(p)
			continue
		}
		v := fieldValue(p, u)
		if v == "" {
			return "", fmt.Errorf("%s is empty for %s in the users file", p, u.UPN)
		}
		if bad := strings.Trim(v, nameChars); bad != "" {
			return "", fmt.Errorf("%s of %s is %q, and %q cannot be part of a device name", p, u.UPN, v, bad[:1])
		}
		b.WriteString(v)
	}
	if b.Len() > MaxDeviceName {
		return "", fmt.Errorf("the device name of %s has %d characters; Asterisk takes at most %d", u.UPN, b.Len(), MaxDeviceName)
	}
	return b.String(), nil
}

// fieldValue is what a field stands for in u.
func fieldValue(field string, u users.User) string {
	switch field {
	case FieldExtension:
		return u.Extension
	case FieldUPN:
		return u.UPN
	case FieldUser:
		return uriUser(u.SIPURI)
	}
	return ""
}

// uriUser is the user part of a SIP URI: "1000" of "sip:1000@pbx.example".
func uriUser(uri string) string {
	lower := strings.ToLower(uri)
	switch {
	case strings.HasPrefix(lower, "sip:"):
		uri = uri[4:]
	case strings.HasPrefix(lower, "sips:"):
		uri = uri[5:]
	default:
		return ""
	}
	user, _, ok := strings.Cut(uri, "@")
	if !ok {
		return ""
	}
	user, _, _ = strings.Cut(user, ";") // user parameters (;phone-context=...)
	return user
}
