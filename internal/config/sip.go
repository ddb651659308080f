package config

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/sip"
)

// SIP is the [SIP] section: PUBLISH (RFC 3903) of PIDF presence and/or
// dialog-info (Event) to the PBX's presence server; the publisher's own
// settings, with its defaults (sip.DefaultSettings, which Presence.ini.example
// lists). Server empty means no SIP target.
type SIP = sip.Settings

// sipEvents are [SIP] Event's values.
var sipEvents = []string{sip.EventPresence, sip.EventDialog, sip.EventBoth}

// sip reads [SIP]; without Server nothing is sent over SIP.
func (l *loader) sip(cfg *Config, s *section) {
	c := &cfg.SIP
	*c = sip.DefaultSettings()
	def := *c
	if e := s.get("Transport"); e.set {
		switch v := strings.ToLower(e.value); v {
		case "udp", "tcp", "tls":
			c.Transport = v
		default:
			l.bad(e, "unknown transport%s; use udp, tcp or tls", didYouMean(e.value, []string{"udp", "tcp", "tls"}))
		}
	}
	if e := s.get("Event"); e.set {
		switch v := strings.ToLower(e.value); v {
		case sip.EventPresence, sip.EventDialog, sip.EventBoth:
			c.Event = v
		default:
			l.bad(e, "unknown event package%s; use presence (PIDF, for presence servers and attendant consoles), "+
				"dialog (dialog-info, what the BLF keys of desk phones subscribe to) or both", didYouMean(e.value, sipEvents))
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
	c.Expires = l.duration(s.get("Expires"), def.Expires, time.Minute)
	c.Concurrency = l.integer(s.get("Concurrency"), def.Concurrency, 1)
	c.Rate = l.rate(s.get("Rate"), def.Rate, "PUBLISH requests per second")
	c.Timeout = l.duration(s.get("Timeout"), def.Timeout, 100*time.Millisecond)
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
