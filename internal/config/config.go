// Package config turns Presence.ini into a typed, validated Config.
//
// The file is read with gopkg.in/ini.v1 after a pre-pass that decodes it (UTF-8 with
// or without BOM, UTF-16 with BOM, CRLF), remembers the line of every key for error
// messages, and sets aside lines ini.v1 would reject or misread. Values are then
// cleaned the same way for every key: an inline comment starts at ';' or '#' preceded
// by whitespace, and a value may be put in double or single quotes (needed when it
// starts with a quote or holds " ;" or " #"). Backslashes are never escapes, so
// Windows paths arrive unchanged.
//
// Load collects every problem it finds and returns them together as an *Error.
package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/users"
)

// WinningTechnology values (legacy key RichPresence.WinningTechnology).
const (
	// WinningMSTeams: Teams presence wins over the PBX's own SIP presence.
	WinningMSTeams = "MSTeams"
	// WinningSipSimple: the PBX's SIP presence wins; Teams presence fills in.
	WinningSipSimple = "SipSimple"
)

// AuthMethod is how an account signs in to Microsoft Entra ID.
type AuthMethod string

// Sign-in methods.
const (
	// AuthDeviceCode signs in a service account once with the device-code flow
	// (delegated Presence.Read.All); the refresh token is kept in the state file.
	AuthDeviceCode AuthMethod = "devicecode"
	// AuthSecret uses client credentials with a client secret (application permission).
	AuthSecret AuthMethod = "secret"
	// AuthCertificate uses client credentials with a certificate (application permission).
	AuthCertificate AuthMethod = "certificate"
)

// Config is the validated content of Presence.ini. Paths in it are absolute.
type Config struct {
	// Path is the absolute path of the INI file, Dir its directory.
	Path, Dir string

	// TeamsEnabled is legacy key MSTeamsPresence.Enable; false makes the service
	// idle (and say so) instead of polling Teams.
	TeamsEnabled bool
	// WinningTechnology is WinningMSTeams or WinningSipSimple.
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
	Delivery Delivery
	// Mapping is the default table with [Mapping] overrides applied.
	Mapping *presence.Mapping

	// Warnings are problems that do not stop the service (a plain-text secret),
	// as "file:line: sentence"; the service logs them at start and verify shows them.
	Warnings []string
}

// Microsoft is the [Microsoft] section: hosts of the cloud in use.
type Microsoft struct {
	Cloud    string // global, usgov, usgovdod or china: the defaults of the two URLs
	LoginURL string // authority host, no trailing slash
	GraphURL string // Graph base including the version, no trailing slash
}

// Proxy is the [Proxy] section. Formatting a Proxy with fmt, slog or encoding/json
// never shows the password.
type Proxy struct {
	// URL is what transport.Options.ProxyURL takes: "" = HTTPS_PROXY from the
	// environment, if any; "direct" = no proxy; else http://, socks5:// or socks5h://
	// [user:password@]host:port. The INI's user and password are percent-decoded
	// once (%40 is @, %25 is %; a literal @ or : also works) and re-encoded here,
	// so that url.Parse gives back the decoded user and password.
	URL string
	// Username and Password are the proxy's credentials when they are not in URL
	// (never both): for an HTTP proxy, used with Negotiate, NTLM or Basic as the
	// proxy asks (DOMAIN\user for NTLM). Password may be an enc:v1: value in the INI.
	Username string
	Password Secret
	// CAFile is an extra PEM bundle trusted in addition to the system roots.
	CAFile string
}

// Polling is the [Polling] section.
type Polling struct {
	Interval        time.Duration // wanted cycle time
	BudgetRequests  int           // Graph requests allowed per BudgetWindow per app per tenant
	BudgetWindow    time.Duration
	BudgetShare     float64 // fraction (0.01..0.90) of the budget presencebridge may use
	RequestTimeout  time.Duration
	ResolveInterval time.Duration // how often UPNs are resolved to object ids again
	ResolveRate     float64       // $batch requests per second while resolving
}

// Account is one [Account.<id>] section: an app registration in a tenant, and the
// users it serves. LoginURL, GraphURL and Budget are resolved against [Microsoft]
// and [Polling].
type Account struct {
	ID       string // as written after "Account."; matched case-insensitively
	TenantID string
	ClientID string
	Auth     AuthMethod

	ClientSecret       Secret // Auth = secret
	CertificateFile    string // Auth = certificate; absolute
	CertificateKeyFile string // optional; absolute
	Username           string // device code: the service account UPN (login hint)

	// Domains are the lower-case UPN domains this account serves; empty means
	// "every user not claimed by another account".
	Domains []string

	LoginURL string
	GraphURL string

	// The Graph throttle budget of this app registration in this tenant, from the
	// account's overrides or [Polling]: BudgetRequests per BudgetWindow, of which
	// presencebridge may use the fraction BudgetShare (0.01..0.90).
	BudgetRequests int
	BudgetWindow   time.Duration
	BudgetShare    float64
}

// Authority is the MSAL authority of the account: LoginURL + "/" + TenantID.
func (a Account) Authority() string {
	return strings.TrimRight(a.LoginURL, "/") + "/" + a.TenantID
}

// Account returns the account with the given id (case-insensitive).
func (c *Config) Account(id string) (*Account, bool) {
	for i := range c.Accounts {
		if strings.EqualFold(c.Accounts[i].ID, id) {
			return &c.Accounts[i], true
		}
	}
	return nil, false
}

// AccountFor returns the account that serves u: the one named in the users file's
// Account column, else the one listing u's domain in Domains, else the single account
// without Domains. The error names the user and the fix.
func (c *Config) AccountFor(u users.User) (*Account, error) {
	where := fmt.Sprintf("user %q", u.UPN)
	if u.Line > 0 {
		where = fmt.Sprintf("user %q (users file line %d)", u.UPN, u.Line)
	}
	if len(c.Accounts) == 0 {
		return nil, fmt.Errorf("%s: Presence.ini has no [Account.<id>] section; add one", where)
	}
	if u.Account != "" {
		if a, ok := c.Account(u.Account); ok {
			return a, nil
		}
		return nil, fmt.Errorf("%s: Account %q is not in Presence.ini; use one of %s, or leave the Account column empty",
			where, u.Account, c.accountList())
	}
	domain := u.Domain()
	for i := range c.Accounts {
		for _, d := range c.Accounts[i].Domains {
			if d == domain {
				return &c.Accounts[i], nil
			}
		}
	}
	var catchAll []*Account
	for i := range c.Accounts {
		if len(c.Accounts[i].Domains) == 0 {
			catchAll = append(catchAll, &c.Accounts[i])
		}
	}
	switch len(catchAll) {
	case 1:
		return catchAll[0], nil
	case 0:
		return nil, fmt.Errorf("%s: no account serves domain %q; add %s to Domains of one of %s in Presence.ini, or name the account in the users file's Account column",
			where, domain, domain, c.accountList())
	default:
		ids := make([]string, len(catchAll))
		for i, a := range catchAll {
			ids[i] = "[Account." + a.ID + "]"
		}
		return nil, fmt.Errorf("%s: %s all serve every domain, so it is unclear which one serves %q; name the account in the users file's Account column, or set Domains",
			where, strings.Join(ids, " and "), domain)
	}
}

func (c *Config) accountList() string {
	ids := make([]string, len(c.Accounts))
	for i, a := range c.Accounts {
		ids[i] = "[Account." + a.ID + "]"
	}
	return strings.Join(ids, ", ")
}

// Secret is a string that never shows itself: fmt (every verb), slog and
// encoding/json print "***". Reveal returns the value for the one place that needs it.
type Secret string

const redacted = "***"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String returns "***" (or "" for an empty secret, so "not set" stays visible).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString is String for %#v.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// Format prints String for every verb, so %x or %q cannot leak the value either.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalJSON writes "***".
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText writes "***".
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue makes slog print "***".
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// String describes the proxy with the password replaced by "***".
func (p Proxy) String() string {
	u := "(HTTPS_PROXY from the environment)"
	if p.URL != "" {
		u = redactRawURL(p.URL)
	}
	if p.Username != "" {
		u += " Username=" + p.Username
	}
	if p.Password != "" {
		u += " Password=" + p.Password.String()
	}
	if p.CAFile != "" {
		return u + " CAFile=" + p.CAFile
	}
	return u
}

// GoString is String for %#v.
func (p Proxy) GoString() string { return fmt.Sprintf("config.Proxy{%s}", p.String()) }

// Format prints String for every verb.
func (p Proxy) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(p.GoString()))
		return
	}
	_, _ = f.Write([]byte(p.String()))
}

// MarshalJSON writes the proxy with the password replaced by "***".
func (p Proxy) MarshalJSON() ([]byte, error) {
	var v struct {
		URL      string `json:"url,omitempty"`
		Username string `json:"username,omitempty"`
		Password Secret `json:"password,omitempty"`
		CAFile   string `json:"caFile,omitempty"`
	}
	v.URL = redactRawURL(p.URL)
	v.Username, v.Password = p.Username, p.Password
	v.CAFile = p.CAFile
	return json.Marshal(v)
}

// LogValue makes slog print String.
func (p Proxy) LogValue() slog.Value { return slog.StringValue(p.String()) }
