package secret

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Value is a secret in memory (a password, a client secret, a header value): a
// string that never shows itself. fmt (every verb), slog and encoding/json print
// "***"; Reveal returns the value for the one place that needs it.
type Value string

const shown = "***"

// Reveal returns the secret value.
func (s Value) Reveal() string { return string(s) }

// String returns "***" (or "" for an empty secret, so "not set" stays visible).
func (s Value) String() string {
	if s == "" {
		return ""
	}
	return shown
}

// GoString is String for %#v.
func (s Value) GoString() string { return fmt.Sprintf("%q", s.String()) }

// Format prints String for every verb, so %x or %q cannot leak the value either.
func (s Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalJSON writes "***".
func (s Value) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText writes "***".
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue makes slog print "***".
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }
