package config

import (
	"net/url"
	"slices"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/cti"
)

// HTTP is the [HTTP] section: JSON documents POSTed to a CTI; the target's own
// settings, with its defaults (cti.DefaultSettings, which Presence.ini.example
// lists). URL empty means no HTTP target.
type HTTP = cti.Settings

// http reads [HTTP]; without URL nothing is sent to a CTI.
func (l *loader) http(cfg *Config, s *section) {
	c := &cfg.HTTP
	*c = cti.DefaultSettings()
	def := *c
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
	c.Timeout = l.duration(s.get("Timeout"), def.Timeout, 100*time.Millisecond)
	c.Concurrency = l.integer(s.get("Concurrency"), def.Concurrency, 1)
}

func headerNames(h map[string]Secret) []string {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
