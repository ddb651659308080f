package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/ini.v1"

	"github.com/presencebridge/presencebridge/internal/config/textfile"
	"github.com/presencebridge/presencebridge/internal/secret"
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
	sc, problems := prescan(text)
	l := &loader{path: abs, dir: filepath.Dir(abs), sc: sc, problems: problems}

	f, err := ini.LoadSources(ini.LoadOptions{
		Insensitive:             true, // keys and sections match case-insensitively
		IgnoreInlineComment:     true, // cleanValue applies the "whitespace before ; or #" rule
		IgnoreContinuation:      true, // C:\dir\ must not swallow the next line
		PreserveSurroundedQuote: true, // cleanValue unquotes, after comments are handled
		KeyValueDelimiters:      "=",
		SkipUnrecognizableLines: true, // prescan reported and blanked them
	}, []byte(sc.text))
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", abs, err)
	}

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
	case strings.EqualFold(e.key, "ClientSecret"):
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
	sc        *scan
	problems  []Problem
}

func (l *loader) add(line int, format string, args ...any) {
	l.problems = append(l.problems, Problem{Line: line, Message: fmt.Sprintf(format, args...)})
}

// bad reports a value that is not allowed: `[Sec] Key = "value": why; what is allowed`.
func (l *loader) bad(e entry, format string, args ...any) {
	l.add(e.line, "%s = %q: %s", e.label(), e.shown(), fmt.Sprintf(format, args...))
}

// build walks ini.v1's sections into a Config, reporting every problem on the way.
func (l *loader) build(f *ini.File) *Config {
	secs := map[string]*section{}
	var accountOrder []string
	for _, s := range f.Sections() {
		lower := strings.ToLower(s.Name())
		kind, display := lower, l.sc.sectionName[lower]
		switch {
		case lower == topSection:
			kind, display = "", ""
		case lower == "account":
			l.add(l.sc.sectionLine[lower], "section [%s] needs an account id: write [Account.<id>], e.g. [Account.main]", display)
			continue
		case strings.HasPrefix(lower, "account."):
			kind = "account"
			display = "Account." + strings.TrimSpace(s.Name()[len("account."):])
			if written := l.sc.sectionName[lower]; written != "" {
				display = "Account." + strings.TrimSpace(written[len("account."):])
			}
		case knownKeys[lower] == nil:
			l.unknownSection(display, l.sc.sectionLine[lower])
			continue
		default:
			display = knownSections[slices.IndexFunc(knownSections, func(n string) bool { return strings.EqualFold(n, lower) })]
		}
		sec := secs[lower]
		if sec == nil {
			sec = &section{name: display, line: l.sc.sectionLine[lower], keys: map[string]entry{}}
			secs[lower] = sec
			if kind == "account" {
				accountOrder = append(accountOrder, lower)
			}
		}
		for _, k := range s.Keys() {
			l.readKey(sec, kind, lower, k)
		}
	}
	for _, u := range l.sc.unknown {
		if sec := secs[u.section]; sec != nil {
			kind, _ := sectionKind(u.section)
			l.unknownKey(sec, kind, u.key, u.line)
		}
	}
	empty := func(name string) *section {
		if s := secs[strings.ToLower(name)]; s != nil {
			return s
		}
		return &section{name: name, keys: map[string]entry{}}
	}
	top := secs[topSection]
	if top == nil {
		top = &section{keys: map[string]entry{}}
	}

	cfg := &Config{Path: l.path, Dir: l.dir}
	l.legacy(cfg, top)
	l.general(cfg, empty("General"))
	l.microsoft(cfg, empty("Microsoft"))
	l.proxy(cfg, empty("Proxy"))
	l.polling(cfg, empty("Polling"))
	l.sip(cfg, empty("SIP"))
	l.http(cfg, empty("HTTP"))
	l.delivery(cfg, empty("Delivery"))
	l.mapping(cfg, empty("Mapping"))
	var accountSecs []*section
	for _, lower := range accountOrder {
		if a, ok := l.account(cfg, secs[lower]); ok {
			cfg.Accounts = append(cfg.Accounts, a)
			accountSecs = append(accountSecs, secs[lower])
		}
	}
	l.crossAccounts(cfg.Accounts, accountSecs)
	if cfg.TeamsEnabled && len(accountOrder) == 0 {
		l.add(0, "no [Account.<id>] section, but %s = 1; add one with TenantID and ClientID (Presence.ini.example shows how), or set %s = 0 to run without Teams",
			keyTeamsEnable, keyTeamsEnable)
	}
	return cfg
}

// readKey files one ini.v1 key under sec, reporting unknown and repeated keys.
func (l *loader) readKey(sec *section, kind, lowerSection string, k *ini.Key) {
	lines := l.sc.keyLines[lowerSection+"\x00"+k.Name()]
	line := sec.line
	if len(lines) > 0 {
		line = lines[len(lines)-1]
	}
	written := l.sc.rawKey[line]
	if written == "" {
		written = k.Name()
	}
	known := knownKeys[kind]
	i := slices.IndexFunc(known, func(n string) bool { return strings.EqualFold(n, k.Name()) })
	if i < 0 {
		v, ok := cleanValue(k.Value())
		if !ok {
			l.add(line, "[%s] %s: the value starts with a quote that is not closed; close it at the end of the value, or remove it", sec.name, written)
			return
		}
		if !l.freeKey(sec, kind, written, v, line) {
			l.unknownKey(sec, kind, written, line)
		}
		return
	}
	for _, later := range lines[min(1, len(lines)):] {
		l.add(later, "%s is set more than once (first on line %d); keep one", entry{section: sec.name, key: known[i]}.label(), lines[0])
	}
	e := entry{section: sec.name, key: known[i], line: line}
	v, ok := cleanValue(k.Value())
	if !ok {
		// The value is not shown: it may be a secret, and the message is clear without it.
		l.add(line, "%s: the value starts with a quote that is not closed; close it at the end of the value, or remove it", e.label())
	} else {
		e.value, e.set = v, v != ""
	}
	sec.keys[strings.ToLower(known[i])] = e
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
	l.add(line, "unknown section [%s]; the sections are [General], [Microsoft], [Proxy], [Polling], [Account.<id>], [SIP], [HTTP], [Delivery] and [Mapping]", name)
}

func (l *loader) unknownKey(sec *section, kind, written string, line int) {
	where := "at the top of the file"
	if sec.name != "" {
		where = "in [" + sec.name + "]"
	}
	// A known key in the wrong place: say where it belongs.
	for _, other := range []string{"", "general", "microsoft", "proxy", "polling", "account", "sip", "http", "delivery"} {
		if other == kind || !slices.ContainsFunc(knownKeys[other], func(n string) bool { return strings.EqualFold(n, written) }) {
			continue
		}
		switch other {
		case "":
			l.add(line, "%s does not belong %s; it is a legacy key and goes at the top of the file, before the first [section]", written, where)
		case "account":
			l.add(line, "%s does not belong %s; it goes in an [Account.<id>] section", written, where)
		default:
			l.add(line, "%s does not belong %s; it goes in [%s]", written, where, knownSections[slices.IndexFunc(knownSections, func(n string) bool { return strings.EqualFold(n, other) })])
		}
		return
	}
	if s := suggest(written, knownKeys[kind]); s != "" {
		l.add(line, "unknown key %q %s; did you mean %q?", written, where, s)
		return
	}
	l.add(line, "unknown key %q %s; the keys there are %s", written, where, strings.Join(knownKeys[kind], ", "))
}

func (l *loader) legacy(cfg *Config, s *section) {
	cfg.TeamsEnabled = l.boolean(s.get(keyTeamsEnable), true)
	cfg.WinningTechnology = DefaultWinningTechnology
	if e := s.get(keyWinningTechnology); e.set {
		switch {
		case strings.EqualFold(e.value, WinningMSTeams):
			cfg.WinningTechnology = WinningMSTeams
		case strings.EqualFold(e.value, WinningSipSimple):
			cfg.WinningTechnology = WinningSipSimple
		default:
			l.bad(e, "unknown technology%s; use MSTeams (Teams presence wins) or SipSimple (the PBX's SIP presence wins)",
				didYouMean(e.value, []string{WinningMSTeams, WinningSipSimple}))
		}
	}
}

func (l *loader) general(cfg *Config, s *section) {
	cfg.StateFile = l.path2(s.get("StateFile"), DefaultStateFile)
	if fi, err := os.Stat(cfg.StateFile); err == nil && fi.IsDir() {
		e := s.get("StateFile")
		e.value = cfg.StateFile
		l.bad(e, "this is a folder; give the state file's name in it, e.g. %s", filepath.Join(cfg.StateFile, DefaultStateFile))
	}
	cfg.UsersFile = l.path2(s.get("UsersFile"), DefaultUsersFile)
	cfg.LogLevel = "info"
	if e := s.get("LogLevel"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "debug", "info", "warn", "error":
			cfg.LogLevel = v
		case "warning":
			cfg.LogLevel = "warn"
		default:
			l.bad(e, "unknown level%s; use debug, info, warn or error", didYouMean(e.value, []string{"debug", "info", "warn", "error"}))
		}
	}
	cfg.LogFormat = "text"
	if e := s.get("LogFormat"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "text", "json":
			cfg.LogFormat = v
		default:
			l.bad(e, "unknown format%s; use text or json", didYouMean(e.value, []string{"text", "json"}))
		}
	}
	if e := s.get("LogFile"); e.set {
		cfg.LogFile = resolvePath(l.dir, e.value)
	}
	cfg.ControlAddr = DefaultControlAddr
	if e := s.get("ControlAddr"); e.set {
		cfg.ControlAddr = l.controlAddr(e)
	}
	cfg.MetricsAddr = DefaultMetricsAddr
	if e := s.get("MetricsAddr"); e.set {
		cfg.MetricsAddr = l.metricsAddr(e)
	}
	cfg.SecretWarnDays = l.integer(s.get("SecretWarnDays"), DefaultSecretWarnDays, 1)
	cfg.EmitAllOnStart = l.boolean(s.get("EmitAllOnStart"), false)
}

// secretValue decrypts an "enc:v1:" value, or notes that a plain one should be
// encrypted. Neither message shows the secret.
func (l *loader) secretValue(cfg *Config, e entry) string {
	if !e.set {
		return ""
	}
	if secret.IsEncrypted(e.value) {
		v, err := secret.Decrypt(e.value, l.dir)
		if err != nil {
			l.add(e.line, "%s: cannot decrypt: %v", e.label(), err)
			return ""
		}
		return v
	}
	cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s:%d: %s is plain text; run `presencebridge secret encrypt` and paste its output as the value",
		filepath.Base(l.path), e.line, e.label()))
	return e.value
}

// metricsAddr reads host:port (any host: a monitoring server may scrape from
// elsewhere) or off.
func (l *loader) metricsAddr(e entry) string {
	if strings.EqualFold(e.value, "off") {
		return ""
	}
	_, port, err := net.SplitHostPort(e.value)
	if p, perr := strconv.Atoi(port); err != nil || perr != nil || p < 0 || p > 65535 {
		l.bad(e, "not host:port; use e.g. 127.0.0.1:9464 (loopback only) or 0.0.0.0:9464 (scraped from elsewhere), or off")
		return ""
	}
	return e.value
}

func (l *loader) controlAddr(e entry) string {
	if strings.EqualFold(e.value, "off") {
		return ""
	}
	host, port, err := net.SplitHostPort(e.value)
	if err != nil {
		l.bad(e, "not host:port; use a loopback address such as 127.0.0.1:8399, or off")
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.bad(e, "port %q is not a number from 0 to 65535; use e.g. 127.0.0.1:8399, or off", port)
		return ""
	}
	if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
		l.bad(e, "not a loopback address; the control endpoint has no authentication, so use 127.0.0.1:<port>, [::1]:<port> or localhost:<port>, or off")
		return ""
	}
	return e.value
}

// Clouds are the Microsoft clouds [Microsoft] Cloud selects: sign-in host and
// Graph base (learn.microsoft.com/graph/deployments).
var Clouds = []struct{ Name, LoginURL, GraphURL, About string }{
	{"global", DefaultLoginURL, DefaultGraphURL, "Microsoft's global service, also GCC (Moderate)"},
	{"usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us/v1.0", "US Government L4: GCC High"},
	{"usgovdod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us/v1.0", "US Government L5: DoD"},
	{"china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/v1.0", "operated by 21Vianet"},
}

var cloudAliases = map[string]string{"public": "global", "commercial": "global", "gcc": "global",
	"gcchigh": "usgov", "dod": "usgovdod", "21vianet": "china"}

func (l *loader) microsoft(cfg *Config, s *section) {
	cloud := Clouds[0]
	if e := s.get("Cloud"); e.set {
		name := strings.ToLower(e.value)
		if a, ok := cloudAliases[name]; ok {
			name = a
		}
		i := slices.IndexFunc(Clouds, func(c struct{ Name, LoginURL, GraphURL, About string }) bool { return c.Name == name })
		if i < 0 {
			names := make([]string, len(Clouds))
			for j, c := range Clouds {
				names[j] = c.Name
			}
			l.bad(e, "unknown cloud%s; use global, usgov (GCC High), usgovdod (DoD) or china (21Vianet)", didYouMean(e.value, names))
		} else {
			cloud = Clouds[i]
		}
	}
	cfg.Microsoft.Cloud = cloud.Name
	cfg.Microsoft.LoginURL = l.loginURL(s.get("LoginURL"), cloud.LoginURL)
	cfg.Microsoft.GraphURL = l.graphURL(s.get("GraphURL"), cloud.GraphURL)
}

func (l *loader) proxy(cfg *Config, s *section) {
	var urlUser string // the user in URL, if any
	e := s.get("URL")
	if e.set {
		if v := strings.ToLower(e.value); v == "direct" || v == "none" {
			cfg.Proxy.URL = "direct"
		} else if u, problem := parseProxyURL(e.value); problem != "" {
			l.bad(e, "%s", problem)
		} else {
			cfg.Proxy.URL = u.String()
			if u.User != nil {
				urlUser = u.User.Username()
			}
		}
	}
	user, pass := s.get("Username"), s.get("Password")
	if user.set || pass.set {
		switch {
		case urlUser != "":
			l.add(user.line, "[Proxy] URL holds the user %q and [Proxy] Username or Password is set too; keep one of them: "+
				"Username and Password (the password can be encrypted with `presencebridge secret encrypt`), or user:password@ in URL", urlUser)
		case !e.set || cfg.Proxy.URL == "direct":
			what := "empty (HTTPS_PROXY from the environment)"
			if e.set {
				what = e.value + " (no proxy)"
			}
			l.add(user.line, "[Proxy] Username and Password are set, but [Proxy] URL is %s; set URL = http://host:port (or socks5://host:port), or empty Username and Password", what)
		case !user.set:
			l.add(pass.line, "[Proxy] Password is set but Username is not; put the proxy user in Username (DOMAIN\\user for NTLM)")
		case strings.ContainsAny(user.value, ":\r\n"):
			l.bad(user, "a proxy user name cannot hold ':' (Basic authentication splits user and password there); use DOMAIN\\user or user@domain")
		}
		cfg.Proxy.Username = user.value
		cfg.Proxy.Password = Secret(l.secretValue(cfg, pass))
	}
	cfg.Proxy.CAFile = l.existingFile(s.get("CAFile"), "a PEM file with the proxy's CA certificate(s)")
}

func (l *loader) polling(cfg *Config, s *section) {
	p := &cfg.Polling
	p.Interval = l.duration(s.get("Interval"), DefaultInterval, time.Second)
	p.BudgetRequests = l.integer(s.get("BudgetRequests"), DefaultBudgetRequests, 1)
	p.BudgetWindow = l.duration(s.get("BudgetWindow"), DefaultBudgetWindow, time.Second)
	p.BudgetShare = l.percent(s.get("BudgetShare"), DefaultBudgetSharePercent)
	p.RequestTimeout = l.duration(s.get("RequestTimeout"), DefaultRequestTimeout, time.Second)
	p.ResolveInterval = l.duration(s.get("ResolveInterval"), DefaultResolveInterval, time.Minute)
	p.ResolveRate = DefaultResolveRate
	if e := s.get("ResolveRate"); e.set {
		r, err := parseFinite(e.value)
		switch {
		case err != nil:
			l.bad(e, "%s; use $batch requests per second, e.g. 10", err)
		case r < 0.1 || r > 100:
			l.bad(e, "out of range; use 0.1 to 100 $batch requests per second")
		default:
			p.ResolveRate = r
		}
	}
}

var (
	accountIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	guidPattern      = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
	domainPattern    = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)
)

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

func (l *loader) boolean(e entry, def bool) bool {
	if !e.set {
		return def
	}
	switch strings.ToLower(e.value) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	l.bad(e, "not a switch; use 1 (on) or 0 (off)")
	return def
}

func (l *loader) duration(e entry, def, least time.Duration) time.Duration {
	if !e.set {
		return def
	}
	d, err := time.ParseDuration(e.value)
	if err != nil {
		if _, numErr := parseFinite(e.value); numErr == nil {
			l.bad(e, "a duration needs a unit; write e.g. %ss for seconds or %sm for minutes", e.value, e.value)
		} else {
			l.bad(e, "not a duration; use a number with a unit, e.g. 10s or 2m")
		}
		return def
	}
	if d < least {
		l.bad(e, "too short; use %s or more", formatDuration(least))
		return def
	}
	return d
}

func (l *loader) integer(e entry, def, least int) int {
	if !e.set {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(e.value, "_", ""))
	if err != nil {
		l.bad(e, "not a whole number; use e.g. %d", def)
		return def
	}
	if n < least {
		l.bad(e, "too small; use %d or more", least)
		return def
	}
	return n
}

// percent reads a BudgetShare (1..90, "%" optional) and returns it as a fraction.
func (l *loader) percent(e entry, defPercent float64) float64 {
	if !e.set {
		return defPercent / 100
	}
	p, err := parseFinite(strings.TrimSpace(strings.TrimSuffix(e.value, "%")))
	if err != nil {
		l.bad(e, "%s; use a percentage from 1 to 90, e.g. 60", err)
		return defPercent / 100
	}
	if p < 1 || p > 90 {
		l.bad(e, "out of range; use a percentage from 1 to 90 (keep headroom for retries and other apps of the tenant)")
		return defPercent / 100
	}
	return p / 100
}

// parseFinite reads a decimal number. NaN and infinities parse as floats but are
// no setting's value: every range check is false for NaN, so one would slip
// through as "in range" (BudgetShare = NaN turned the throttle budget off).
func parseFinite(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil && errors.Is(err, strconv.ErrRange):
		return 0, errors.New("out of range")
	case err != nil:
		return 0, errors.New("not a number")
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, errors.New("not a finite number")
	}
	return f, nil
}

// path2 resolves a file name relative to the INI's directory; empty gives def.
func (l *loader) path2(e entry, def string) string {
	v := e.value
	if !e.set {
		v = def
	}
	return resolvePath(l.dir, v)
}

// existingFile resolves e and reports it if no such file exists. what says what the
// file should hold. Empty stays empty.
func (l *loader) existingFile(e entry, what string) string {
	if !e.set {
		return ""
	}
	p := resolvePath(l.dir, e.value)
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.bad(e, "file not found (looked at %s); it should be %s", p, what)
	case err != nil:
		l.bad(e, "cannot read it (%s): %v", p, errors.Unwrap(err))
	case fi.IsDir():
		l.bad(e, "%s is a folder; it should be %s", p, what)
	}
	return p
}

func (l *loader) loginURL(e entry, def string) string {
	if !e.set {
		return def
	}
	u, problem := parseHTTPSURL(e.value, "https://login.microsoftonline.com")
	if problem == "" && strings.Trim(u.Path, "/") != "" {
		problem = fmt.Sprintf("has a path (%s); LoginURL is the sign-in host only, put the tenant in TenantID, e.g. https://login.microsoftonline.com", u.Path)
	}
	if problem != "" {
		l.bad(e, "%s", problem)
		return def
	}
	return strings.TrimRight(e.value, "/")
}

func (l *loader) graphURL(e entry, def string) string {
	if !e.set {
		return def
	}
	u, problem := parseHTTPSURL(e.value, "https://graph.microsoft.com/v1.0")
	if problem == "" && strings.Trim(u.Path, "/") == "" {
		problem = "has no API version; use e.g. https://graph.microsoft.com/v1.0"
	}
	if problem != "" {
		l.bad(e, "%s", problem)
		return def
	}
	return strings.TrimRight(e.value, "/")
}

func parseHTTPSURL(v, example string) (*url.URL, string) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return nil, "not a URL; use e.g. " + example
	}
	if !strings.EqualFold(u.Scheme, "https") {
		return nil, "must start with https:// (sign-in and Graph need TLS); use e.g. " + example
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, "must not hold user:password@, ?query or #fragment; use e.g. " + example
	}
	return u, ""
}

// parseProxyURL reads scheme://[user[:password]@]host:port. The last '@' ends the
// user and password and the first ':' splits them, so a literal '@' or ':' in a
// password works (and '#', which url.Parse would take as a fragment); then both
// are percent-decoded once, so %40 is '@', %25 is '%' and %C3%A9 is 'é'.
func parseProxyURL(v string) (*url.URL, string) {
	const allowed = "use http://host:port (CONNECT), socks5://host:port or socks5h://host:port, with user:password@ before the host if the proxy asks for it, or direct for no proxy"
	i := strings.Index(v, "://")
	if i < 0 {
		return nil, "has no scheme; " + allowed
	}
	scheme, rest := strings.ToLower(v[:i]), v[i+3:]
	if scheme != "http" && scheme != "socks5" && scheme != "socks5h" {
		return nil, fmt.Sprintf("scheme %q is not supported; %s", scheme, allowed)
	}
	u := &url.URL{Scheme: scheme}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		rawName, rawPass, hasPass := strings.Cut(rest[:at], ":")
		if rawName == "" {
			return nil, "has a password but no user name before it; " + allowed
		}
		name, problem := decodeUserinfo(rawName, "user name")
		if problem != "" {
			return nil, problem
		}
		pass, problem := decodeUserinfo(rawPass, "password")
		if problem != "" {
			return nil, problem
		}
		if hasPass {
			u.User = url.UserPassword(name, pass)
		} else {
			u.User = url.User(name)
		}
		rest = rest[at+1:]
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.ContainsAny(rest, "/?#") {
		return nil, "has a path, query or fragment; give only scheme://[user:password@]host:port"
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" {
		return nil, "needs a host and a port, e.g. http://proxy.example:8080"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Sprintf("port %q is not a number from 1 to 65535", port)
	}
	u.Host = rest
	return u, ""
}

// redactRawURL hides the password in a proxy URL as written, parsable or not.
func redactRawURL(v string) string {
	start := 0
	if i := strings.Index(v, "://"); i >= 0 {
		start = i + 3
	}
	at := strings.LastIndexByte(v[start:], '@')
	if at < 0 {
		return v
	}
	userinfo := v[start : start+at]
	c := strings.IndexByte(userinfo, ':')
	if c < 0 {
		return v
	}
	return v[:start+c+1] + redacted + v[start+at:]
}

// looksLikeSecret spots an Entra client secret pasted into the wrong key (they are
// about 40 characters and hold a '~'), so an error message does not repeat it.
func looksLikeSecret(v string) bool {
	return len(v) >= 30 && strings.Contains(v, "~")
}

func isLoopbackURL(v string) bool {
	u, err := url.Parse(v)
	if err != nil {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return strings.EqualFold(h, "localhost") || (ip != nil && ip.IsLoopback())
}

// resolvePath makes p absolute against dir. A Windows absolute path (C:\x, \\server\x)
// counts as absolute on every OS and stays as written.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) || isWindowsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func isWindowsAbs(p string) bool {
	if strings.HasPrefix(p, `\\`) {
		return true
	}
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') &&
		(('a' <= p[0] && p[0] <= 'z') || ('A' <= p[0] && p[0] <= 'Z'))
}

func didYouMean(v string, candidates []string) string {
	if s := suggest(v, candidates); s != "" {
		return fmt.Sprintf(" (did you mean %s?)", s)
	}
	return ""
}

// formatDuration prints 1m rather than Go's 1m0s, and 1h rather than 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
