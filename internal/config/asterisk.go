package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/asterisk"
)

// Asterisk is the [Asterisk] section: device states that Asterisk's (and
// FreePBX's) dialplan hints show, set over ARI or AMI; the target's own
// settings, with its defaults (asterisk.DefaultSettings, which
// Presence.ini.example lists). Without URL (Mode = ari) or Address (Mode =
// ami) there is no Asterisk target.
type Asterisk = asterisk.Settings

// asteriskModes are [Asterisk] Mode's values.
var asteriskModes = []string{asterisk.ModeARI, asterisk.ModeAMI}

// asterisk reads [Asterisk].
func (l *loader) asterisk(cfg *Config, s *section) {
	c := &cfg.Asterisk
	*c = asterisk.DefaultSettings()
	def := *c
	modeOK := true
	if e := s.get("Mode"); e.set {
		switch v := strings.ToLower(e.value); v {
		case asterisk.ModeARI, asterisk.ModeAMI:
			c.Mode = v
		default:
			modeOK = false
			l.bad(e, "unknown mode%s; use ari (the REST interface, Asterisk 12 and later, FreePBX 14 and later) or ami (the manager interface, where ARI is off)",
				didYouMean(e.value, asteriskModes))
		}
	}
	if e := s.get("URL"); e.set {
		u, err := url.Parse(e.value)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
			l.add(e.line, "%s = %q: not a URL; use ARI's base, e.g. http://pbx.example.com:8088/ari (http.conf's port, 8088 unless changed)", e.label(), redactRawURL(e.value))
		case u.User != nil:
			l.add(e.line, "%s: do not put user:password@ in the URL; set [Asterisk] Username and Password (the ari.conf user)", e.label())
		case u.RawQuery != "" || u.Fragment != "":
			l.bad(e, "ARI's base takes no ?query or #fragment; use e.g. http://pbx.example.com:8088/ari")
		case strings.Trim(u.Path, "/") == "":
			l.bad(e, "no path: ARI is at /ari below http.conf's address, e.g. %s://%s/ari", u.Scheme, u.Host)
		default:
			c.URL = e.value
		}
	}
	c.Username = s.get("Username").value
	c.Password = Secret(l.secretValue(cfg, s.get("Password")))
	c.CAFile = l.existingFile(s.get("CAFile"), "a PEM file with the CA certificate(s) of Asterisk's https server")
	c.Address = l.amiAddress(s.get("Address"))
	c.Secret = Secret(l.secretValue(cfg, s.get("Secret")))
	if e := s.get("Device"); e.set {
		if _, err := asterisk.ParseDevice(e.value); err != nil {
			l.bad(e, "%v", err)
		} else {
			c.Device = e.value
		}
	}
	c.Timeout = l.duration(s.get("Timeout"), def.Timeout, 100*time.Millisecond)
	c.Concurrency = l.integer(s.get("Concurrency"), def.Concurrency, 1)
	if modeOK {
		l.crossAsterisk(c, s)
	}
}

// crossAsterisk checks that the keys set belong to the mode, and that a mode
// with its address has a user.
func (l *loader) crossAsterisk(c *Asterisk, s *section) {
	own, other, where, otherMode := []string{"URL", "Password", "CAFile"}, []string{"Address", "Secret"}, "URL", asterisk.ModeAMI
	what, user := "ARI's base URL, e.g. http://pbx.example.com:8088/ari", "the ari.conf user"
	if c.Mode == asterisk.ModeAMI {
		own, other, where, otherMode = other, own, "Address", asterisk.ModeARI
		what, user = "the manager interface's host:port, e.g. pbx.example.com:5038", "the manager.conf user"
	}
	for _, k := range other {
		if e := s.get(k); e.set {
			l.add(e.line, "[%s] %s is for Mode = %s, but Mode is %s; set Mode = %s, or remove %s", s.name, k, otherMode, c.Mode, otherMode, k)
		}
	}
	if !s.get(where).set {
		for _, k := range append([]string{"Username"}, own...) {
			if e := s.get(k); e.set && k != where {
				l.add(e.line, "[%s] %s is set but %s is not, so nothing is sent to Asterisk; set %s = <%s>", s.name, k, where, where, what)
				return
			}
		}
		return
	}
	if c.Enabled() && c.Username == "" && s.get(where).set {
		l.add(s.get(where).line, "[%s] Username is empty; set it to %s presencebridge signs in as", s.name, user)
	}
}

// amiAddress reads host[:port] of the manager interface; the port defaults to
// 5038 (manager.conf's default).
func (l *loader) amiAddress(e entry) string {
	if !e.set {
		return ""
	}
	v := strings.TrimSpace(e.value)
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		host, port = v, "5038"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		l.bad(e, "port %q is not a number from 1 to 65535; use host:port, e.g. pbx.example.com:5038", port)
		return ""
	}
	if host == "" || strings.ContainsAny(host, " /@:") {
		l.bad(e, "not a host name or address; use host:port of the manager interface, e.g. pbx.example.com:5038")
		return ""
	}
	return net.JoinHostPort(host, port)
}
