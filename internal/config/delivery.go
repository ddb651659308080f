package config

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// Defaults of the delivery sections; Presence.ini.example documents the same values.
const (
	DefaultSIPTransport   = "udp"
	DefaultSIPExpires     = time.Hour
	DefaultSIPConcurrency = 32
	DefaultSIPRate        = 2000.0
	DefaultSIPTimeout     = 5 * time.Second
	DefaultHTTPTimeout    = 10 * time.Second
	DefaultHTTPConcurrent = 16
	DefaultRetryMin       = time.Second
	DefaultRetryMax       = time.Minute
	DefaultBatchSize      = 500
	DefaultStaleAfter     = 5 * time.Minute
	DefaultReassertRate   = 200.0
	DefaultProbeInterval  = 30 * time.Second
)

// SIP is the [SIP] section: PUBLISH (RFC 3903) of PIDF presence to the PBX's
// presence server. Server empty means no SIP target.
type SIP struct {
	Server        string // host:port (port 5060, or 5061 for tls, added when missing)
	Transport     string // udp, tcp or tls
	OutboundProxy string // host:port; every request is routed through it; "" = none
	From          string // From identity (sip:...); "" = each user's own SIP URI
	Username      string // digest user for 401/407 challenges
	Password      Secret
	CAFile        string // extra CA for tls
	ServerName    string // TLS name to verify instead of Server's host
	Expires       time.Duration
	Concurrency   int
	Rate          float64 // PUBLISH requests per second, at most
	Timeout       time.Duration
}

// HTTP is the [HTTP] section: JSON documents POSTed to a CTI. URL empty means no
// HTTP target.
type HTTP struct {
	URL string
	// Headers are sent with every request (Header.<Name> = value); their values
	// are treated as secrets.
	Headers        map[string]Secret
	Batch          bool // one POST with every pending change instead of one per change
	CAFile         string
	ClientCertFile string
	ClientKeyFile  string
	Timeout        time.Duration
	Concurrency    int
}

// Delivery is the [Delivery] section: how targets are retried, and the stale policy.
type Delivery struct {
	RetryMin   time.Duration // first back-off after a failure
	RetryMax   time.Duration // longest back-off
	BatchSize  int           // items handed to a target at once
	StaleAfter time.Duration // publish the [Mapping] Stale fallback after this long without a good cycle; 0 = never
	// ReassertRate is users per second whose last state is re-asserted to a
	// target at start and after it was down; 0 = never.
	ReassertRate float64
	// ProbeInterval is how often an idle target is checked; 0 = never.
	ProbeInterval time.Duration
}

func (l *loader) sip(cfg *Config, s *section) {
	c := &cfg.SIP
	c.Transport = DefaultSIPTransport
	if e := s.get("Transport"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "udp", "tcp", "tls":
			c.Transport = v
		default:
			l.bad(e, "unknown transport%s; use udp, tcp or tls", didYouMean(e.value, []string{"udp", "tcp", "tls"}))
		}
	}
	defPort := "5060"
	if c.Transport == "tls" {
		defPort = "5061"
	}
	c.Server = l.sipHostPort(s.get("Server"), defPort)
	c.OutboundProxy = l.sipHostPort(s.get("OutboundProxy"), defPort)
	if e := s.get("From"); e.set {
		if !strings.HasPrefix(strings.ToLower(e.value), "sip:") && !strings.HasPrefix(strings.ToLower(e.value), "sips:") || !strings.Contains(e.value, "@") {
			l.bad(e, "not a SIP URI; use e.g. sip:presencebridge@pbx.example.com, or leave it empty to publish as each user")
		} else {
			c.From = e.value
		}
	}
	c.Username = s.get("Username").value
	c.Password = Secret(l.secretValue(cfg, s.get("Password")))
	if c.Password != "" && c.Username == "" {
		l.add(s.get("Password").line, "[%s] Password is set but Username is not; set the digest user name too", s.name)
	}
	c.CAFile = l.existingFile(s.get("CAFile"), "a PEM file with the CA certificate(s) of the SIP server")
	c.ServerName = s.get("ServerName").value
	c.Expires = l.duration(s.get("Expires"), DefaultSIPExpires, time.Minute)
	c.Concurrency = l.integer(s.get("Concurrency"), DefaultSIPConcurrency, 1)
	c.Rate = l.rate(s.get("Rate"), DefaultSIPRate, "PUBLISH requests per second")
	c.Timeout = l.duration(s.get("Timeout"), DefaultSIPTimeout, 100*time.Millisecond)
	if c.Server == "" {
		for _, k := range []string{"OutboundProxy", "From", "Username", "CAFile"} {
			if e := s.get(k); e.set {
				l.add(e.line, "[%s] %s is set but Server is not, so nothing is sent over SIP; set Server = <host:port of the PBX's presence server>", s.name, k)
				break
			}
		}
	}
}

// sipHostPort reads host[:port]; a "sip:" prefix and ";lr" are tolerated.
func (l *loader) sipHostPort(e entry, defPort string) string {
	if !e.set {
		return ""
	}
	v := strings.Trim(strings.TrimSpace(e.value), "<>")
	lower := strings.ToLower(v)
	if strings.HasPrefix(lower, "sip:") {
		v = v[4:]
	} else if strings.HasPrefix(lower, "sips:") {
		v = v[5:]
	}
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		host, port = v, defPort
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		l.bad(e, "port %q is not a number from 1 to 65535; use host:port, e.g. pbx.example.com:5060", port)
		return ""
	}
	if host == "" || strings.ContainsAny(host, " /@") {
		l.bad(e, "not a host name or address; use host:port, e.g. pbx.example.com:5060")
		return ""
	}
	return net.JoinHostPort(host, port)
}

func (l *loader) http(cfg *Config, s *section) {
	c := &cfg.HTTP
	if e := s.get("URL"); e.set {
		u, err := url.Parse(e.value)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			l.add(e.line, "%s = %q: not a URL; use e.g. https://cti.example.com/presence", e.label(), redactRawURL(e.value))
		case u.User != nil:
			l.add(e.line, "%s: do not put user:password@ in the URL; send credentials with Header.Authorization = Basic <base64> (or Bearer <token>)", e.label())
		default:
			c.URL = e.value
		}
	}
	for name, e := range s.headers {
		if c.Headers == nil {
			c.Headers = map[string]Secret{}
		}
		c.Headers[name] = Secret(l.secretValue(cfg, e))
	}
	c.Batch = l.boolean(s.get("Batch"), false)
	c.CAFile = l.existingFile(s.get("CAFile"), "a PEM file with the CA certificate(s) of the CTI server")
	c.ClientCertFile = l.existingFile(s.get("ClientCertFile"), "a PEM client certificate")
	c.ClientKeyFile = l.existingFile(s.get("ClientKeyFile"), "the PEM private key of ClientCertFile")
	if (c.ClientCertFile == "") != (c.ClientKeyFile == "") {
		l.add(s.line, "[%s]: ClientCertFile and ClientKeyFile go together; set both or neither", s.name)
	}
	c.Timeout = l.duration(s.get("Timeout"), DefaultHTTPTimeout, 100*time.Millisecond)
	c.Concurrency = l.integer(s.get("Concurrency"), DefaultHTTPConcurrent, 1)
}

func (l *loader) delivery(cfg *Config, s *section) {
	d := &cfg.Delivery
	d.RetryMin = l.duration(s.get("RetryMin"), DefaultRetryMin, 100*time.Millisecond)
	d.RetryMax = l.duration(s.get("RetryMax"), DefaultRetryMax, time.Second)
	if d.RetryMax < d.RetryMin {
		l.add(s.get("RetryMax").line, "[%s] RetryMax (%s) is shorter than RetryMin (%s); make it at least as long", s.name, formatDuration(d.RetryMax), formatDuration(d.RetryMin))
	}
	d.BatchSize = l.integer(s.get("BatchSize"), DefaultBatchSize, 1)
	d.StaleAfter = l.durationOrOff(s.get("StaleAfter"), DefaultStaleAfter, 30*time.Second)
	if e := s.get("ReassertRate"); e.value == "0" || strings.EqualFold(e.value, "off") {
		d.ReassertRate = 0
	} else {
		d.ReassertRate = l.rate(e, DefaultReassertRate, "users per second")
	}
	d.ProbeInterval = l.durationOrOff(s.get("ProbeInterval"), DefaultProbeInterval, time.Second)
}

// durationOrOff is a duration where 0 or off turns the feature off.
func (l *loader) durationOrOff(e entry, def, least time.Duration) time.Duration {
	if e.set && (e.value == "0" || strings.EqualFold(e.value, "off")) {
		return 0
	}
	return l.duration(e, def, least)
}

// mapping reads [Mapping]: every key is a rule (see presence.Mapping.Set).
func (l *loader) mapping(cfg *Config, s *section) {
	cfg.Mapping = presence.DefaultMapping()
	for _, e := range s.free {
		if err := cfg.Mapping.Set(e.key, e.value); err != nil {
			l.add(e.line, "%s = %q: %v", e.label(), e.value, err)
		}
	}
}

// rate reads a positive number of events per second.
func (l *loader) rate(e entry, def float64, what string) float64 {
	if !e.set {
		return def
	}
	r, err := parseFinite(e.value)
	if err != nil || r <= 0 {
		l.bad(e, "not a positive number; use %s, e.g. %g", what, def)
		return def
	}
	return r
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

// mappingRedacted lists the rules that differ from the defaults.
func (c *Config) mappingRedacted(kv func(k, v string)) {
	def := presence.DefaultMapping()
	for _, k := range c.Mapping.Keys() {
		r, _ := c.Mapping.Rule(k)
		if d, ok := def.Rule(k); !ok || d != r {
			kv(k, r.String())
		}
	}
}

func headerNames(h map[string]Secret) []string {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
