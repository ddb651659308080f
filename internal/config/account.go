package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/users"
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

var (
	accountIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	guidPattern      = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
	domainPattern    = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)
)

// account reads one [Account.<id>]; ok is false when the section is no usable
// account (its id is not allowed, or its sign-in method is unknown).
func (l *loader) account(cfg *Config, s *section) (Account, bool) {
	a := Account{ID: strings.TrimPrefix(s.name, "Account.")}
	ok := true
	if !accountIDPattern.MatchString(a.ID) {
		l.add(s.line, "[%s]: account id %q is not allowed; use 1 to 32 letters, digits, _ or -", s.name, a.ID)
		ok = false
	}

	a.LoginURL = l.loginURL(s.get("LoginURL"), cfg.Microsoft.LoginURL)
	a.GraphURL = l.graphURL(s.get("GraphURL"), cfg.Microsoft.GraphURL)

	if e := s.get("TenantID"); !e.set {
		l.add(e.line, "%s is missing; set the directory (tenant) id, a GUID, or the tenant's domain, e.g. contoso.onmicrosoft.com", e.label())
	} else if id := strings.Trim(e.value, "{}"); !guidPattern.MatchString(id) && !domainPattern.MatchString(id) {
		l.bad(e, "not a GUID or a domain; use the Directory (tenant) ID from the app registration's Overview page, or a verified domain such as contoso.onmicrosoft.com")
	} else {
		a.TenantID = id
	}

	if e := s.get("ClientID"); !e.set {
		l.add(e.line, "%s is missing; copy the Application (client) ID, a GUID, from the app registration's Overview page", e.label())
	} else if id := strings.Trim(e.value, "{}"); looksLikeSecret(id) {
		l.bad(e, "this looks like a client secret, not an id; put it in ClientSecret (with Auth = secret) and copy the Application (client) ID, a GUID, from the app registration's Overview page")
	} else if !guidPattern.MatchString(id) && !isLoopbackURL(a.LoginURL) {
		l.bad(e, "not a GUID; copy the Application (client) ID from the app registration's Overview page (a non-GUID id is accepted only with a loopback LoginURL, i.e. the simulated tenant)")
	} else {
		a.ClientID = id
	}

	a.Auth = AuthDeviceCode
	authEntry := s.get("Auth")
	if !authEntry.set {
		authEntry.value = string(AuthDeviceCode)
	} else {
		switch strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(authEntry.value)) {
		case "devicecode":
			a.Auth = AuthDeviceCode
		case "secret", "clientsecret":
			a.Auth = AuthSecret
		case "certificate", "cert", "clientcertificate":
			a.Auth = AuthCertificate
		default:
			l.bad(authEntry, "unknown sign-in method%s; use devicecode, secret or certificate (username/password sign-in is deprecated and not supported)",
				didYouMean(authEntry.value, []string{"devicecode", "secret", "certificate"}))
			return a, false // ClientSecret and certificate checks would only guess
		}
	}

	secret := s.get("ClientSecret")
	switch {
	case a.Auth == AuthSecret && !secret.set:
		l.add(authEntry.line, "%s = secret needs ClientSecret; copy the secret's Value (not its Secret ID) from the app registration's Certificates & secrets page", authEntry.label())
	case secret.set && a.Auth != AuthSecret:
		l.add(secret.line, "%s is set but Auth = %s; set Auth = secret to use it, or remove ClientSecret", secret.label(), a.Auth)
	case secret.set && guidPattern.MatchString(strings.Trim(secret.value, "{}")):
		l.bad(secret, "this looks like the secret's ID (a GUID), not its value; copy the Value column from the app registration's Certificates & secrets page")
	case secret.set:
		a.ClientSecret = Secret(l.secretValue(cfg, secret))
	}

	cert := s.get("CertificateFile")
	key := s.get("CertificateKeyFile")
	switch {
	case a.Auth == AuthCertificate && !cert.set:
		l.add(authEntry.line, "%s = certificate needs CertificateFile, a PEM file with the certificate and its private key (or the certificate only, with CertificateKeyFile)", authEntry.label())
	case a.Auth != AuthCertificate && (cert.set || key.set):
		e := cert
		if !cert.set {
			e = key
		}
		l.add(e.line, "%s is set but Auth = %s; set Auth = certificate to use it, or remove %s", e.label(), a.Auth, e.key)
	case a.Auth == AuthCertificate:
		a.CertificateFile = l.existingFile(cert, "a PEM file with the certificate and its private key")
		a.CertificateKeyFile = l.existingFile(key, "a PEM file with the certificate's private key")
	}

	if e := s.get("Username"); e.set {
		if !strings.Contains(e.value, "@") {
			l.bad(e, "not a UPN; use the service account's sign-in name, e.g. presence-svc@contoso.onmicrosoft.com")
		} else {
			a.Username = e.value
		}
	}

	if e := s.get("Domains"); e.set {
		for _, d := range strings.FieldsFunc(e.value, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' }) {
			d = strings.ToLower(strings.TrimPrefix(d, "@"))
			if !domainPattern.MatchString(d) {
				l.bad(e, "%q is not a domain; list UPN domains such as contoso.com, separated by commas", d)
				continue
			}
			if !slices.Contains(a.Domains, d) {
				a.Domains = append(a.Domains, d)
			}
		}
	}

	a.BudgetRequests = l.integer(s.get("BudgetRequests"), cfg.Polling.BudgetRequests, 1)
	a.BudgetWindow = l.duration(s.get("BudgetWindow"), cfg.Polling.BudgetWindow, time.Second)
	a.BudgetShare = l.percent(s.get("BudgetShare"), cfg.Polling.BudgetShare*100)
	return a, ok
}

// crossAccounts checks what accounts must not share: a UPN domain, or an app
// registration in a tenant (Graph counts one budget per app per tenant).
func (l *loader) crossAccounts(accounts []Account, secs []*section) {
	type owner struct {
		id   string
		line int
	}
	domains := map[string]owner{}
	apps := map[string]owner{}
	for i, a := range accounts {
		s := secs[i]
		de := s.get("Domains")
		for _, d := range a.Domains {
			if o, dup := domains[d]; dup {
				l.add(de.line, "%s: %s is also served by [Account.%s] (line %d); each domain may belong to one account", de.label(), d, o.id, o.line)
				continue
			}
			domains[d] = owner{a.ID, de.line}
		}
		if a.TenantID == "" || a.ClientID == "" {
			continue
		}
		app := strings.ToLower(a.TenantID + "\x00" + a.ClientID)
		if o, dup := apps[app]; dup {
			l.add(s.line, "[Account.%s] uses the same TenantID and ClientID as [Account.%s] (line %d); Graph counts both against one throttle budget per app and tenant, so serve both sets of users from one account (list the domains in its Domains), or register a second app",
				a.ID, o.id, o.line)
			continue
		}
		apps[app] = owner{a.ID, s.line}
	}
}

// looksLikeSecret spots an Entra client secret pasted into the wrong key (they are
// about 40 characters and hold a '~'), so an error message does not repeat it.
func looksLikeSecret(v string) bool {
	return len(v) >= 30 && strings.Contains(v, "~")
}
