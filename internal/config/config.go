// Package config turns Presence.ini into a typed, validated Config.
//
// The file is decoded first (UTF-8 with or without BOM, UTF-16 with BOM, CRLF), then
// read by one scanner (scan.go) that both Load and Set use: it knows the line of
// every section and key, for error messages and for `config set` to write in place.
// Values are cleaned the same way for every key: an inline comment starts at ';' or
// '#' preceded by whitespace, and a value may be put in double or single quotes
// (needed when it starts with a quote or holds " ;" or " #"). Backslashes are never
// escapes, so Windows paths arrive unchanged.
//
// Load collects every problem it finds and returns them together as an *Error.
//
// Where things are: load.go is the loader (Load, the walk over the sections, unknown
// keys and sections); scan.go reads the INI syntax; one file per section reads its
// keys into Config (legacy.go for the keys above the first section, general.go,
// microsoft.go, proxy.go, polling.go, account.go, sip.go, http.go, delivery.go,
// mapping.go and pbx.go); values.go holds the value parsers the sections share (switches,
// numbers, durations, paths, URLs, secrets); schema.go the known sections, keys and
// defaults; errors.go the problems; edit.go `config set`; redacted.go the effective
// configuration that verify prints.
package config

import (
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// Config is the validated content of Presence.ini. Paths in it are absolute.
type Config struct {
	// Path is the absolute path of the INI file, Dir its directory.
	Path, Dir string

	// TeamsEnabled is legacy key MSTeamsPresence.Enable; false makes the service
	// idle (and say so) instead of polling Teams.
	TeamsEnabled bool
	// WinningTechnology is WinningMSTeams or WinningSipSimple: which of a user's
	// two inputs, the Teams state and the PBX's own state ([PBX] Watch), the
	// targets receive (compose applies it). With Watch = off there is one input
	// and both values send the Teams state.
	WinningTechnology string

	// StateFile is the bbolt database (tokens, resolved ids, last states).
	StateFile string
	// UsersFile is the CSV listing the watched users (see users.Load).
	UsersFile string
	// LogLevel is the minimum level logged: "debug", "info", "warn" or "error"
	// (slog.Level.UnmarshalText reads it, upper-cased).
	LogLevel string
	// LogFormat is "text" or "json".
	LogFormat string
	// LogFile is where the log goes, rotated at 10 MB with 5 files kept; empty
	// means the console (the journal or the service log when run as a service).
	LogFile string
	// ControlAddr is the loopback host:port of the local control endpoint
	// (status, presence get); port 0 picks a free one; empty when set to "off".
	ControlAddr string
	// MetricsAddr is host:port of the Prometheus /metrics and /healthz endpoint;
	// empty when set to "off". Loopback unless a field engineer opens it up.
	MetricsAddr string
	// SecretWarnDays is how many days before a client secret expires the warnings start.
	SecretWarnDays int
	// EmitAllOnStart pushes every user's state on start, not only changes.
	EmitAllOnStart bool

	// Microsoft holds the [Microsoft] defaults; each Account carries the resolved URLs.
	Microsoft Microsoft
	Proxy     Proxy
	Polling   Polling
	Accounts  []Account

	// Delivery to the phone system.
	SIP      SIP
	HTTP     HTTP
	Asterisk Asterisk
	Delivery Delivery
	// Mapping is the default table with [Mapping] overrides applied.
	Mapping *presence.Mapping

	// PBX is the other direction: the PBX's calls watched (PBX.Watch) and shown
	// in Teams (PBX.Write).
	PBX PBX

	// Warnings are problems that do not stop the service (a plain-text secret),
	// as "file:line: sentence"; the service logs them at start and verify shows them.
	Warnings []string
}

// Secret is a value of Presence.ini that never shows itself (secret.Value).
type Secret = secret.Value

const redacted = "***"
