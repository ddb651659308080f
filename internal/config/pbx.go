package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/teams/write"
	"github.com/presencebridge/presencebridge/internal/users"
)

// PBX is the [PBX] section: the other direction, calls on the PBX shown in Teams.
// Watch holds the PBX watch's settings (which event packages are subscribed to,
// the subscriptions' lifetime and rate, where NOTIFYs come to; defaults in
// watch.DefaultSettings), Write the Teams writer's (the Teams pair each PBX state
// becomes, and the expiration of each setPresence; defaults in
// write.DefaultSettings). The SIP connection the watch uses is [SIP]'s. With
// Watch.Watch = off (the default) nothing is watched or written, and what the
// targets receive is the Teams state alone.
type PBX struct {
	Watch watch.Settings
	Write write.Settings
}

// Watching reports whether the PBX is watched ([PBX] Watch is not off).
func (p PBX) Watching() bool { return p.Watch.Watch != "" && p.Watch.Watch != watch.Off }

// Bounds of [PBX]'s durations.
const (
	// A subscription's lifetime: the PBX's 200 decides (RFC 6665 section 4.1.2.1,
	// Kamailio's presence max_expires is an hour); longer than a day only delays
	// noticing a PBX that forgot the subscription.
	minSubscribeExpires = time.Minute
	maxSubscribeExpires = 24 * time.Hour
	// setPresence's expirationDuration is PT5M..PT4H (Microsoft Graph,
	// "presence: setPresence").
	minTeamsExpiration = 5 * time.Minute
	maxTeamsExpiration = 4 * time.Hour
)

// watchModes are [PBX] Watch's values.
var watchModes = []string{watch.Off, watch.Dialog, watch.Presence, watch.Both}

// pbx reads [PBX]: what is watched on the PBX and what a call becomes in Teams.
// What it needs from other sections is checked by crossPBX.
func (l *loader) pbx(cfg *Config, s *section) {
	p := &cfg.PBX
	p.Watch = watch.DefaultSettings()
	p.Write = write.DefaultSettings()
	w, wdef := &p.Watch, p.Watch
	if e := s.get("Watch"); e.set {
		switch v := strings.ToLower(e.value); {
		case isOff(e):
			w.Watch = watch.Off
		case slices.Contains(watchModes, v):
			w.Watch = v
		case v == "1" || v == "on" || v == "yes" || v == "true":
			l.bad(e, "say which events to watch: dialog (calls, as BLF keys see them), presence (the phone's own presence) or both")
		default:
			l.bad(e, "unknown value%s; use dialog (calls, as BLF keys see them), presence (the phone's own presence), both, or off", didYouMean(e.value, watchModes))
		}
	}
	w.Expires = l.durationIn(s.get("SubscribeExpires"), wdef.Expires, minSubscribeExpires, maxSubscribeExpires)
	if e := s.get("SubscribeRate"); isOff(e) {
		l.bad(e, "SUBSCRIBE requests cannot be turned off on their own; set Watch = off to stop watching the PBX, or use SUBSCRIBE requests per second, e.g. %g", wdef.Rate)
	} else {
		w.Rate = l.rate(e, wdef.Rate, "SUBSCRIBE requests per second")
	}
	w.Listen = l.notifyAddr(s.get("Listen"))
	w.URI = l.watchURI(s.get("WatchURI"))

	wr, wrdef := &p.Write, p.Write
	wr.InCall = l.teamsPair(s.get("InCall"), wrdef.InCall)
	wr.Ringing = l.teamsPair(s.get("Ringing"), wrdef.Ringing)
	wr.DND = l.teamsPair(s.get("DND"), wrdef.DND)
	wr.Away = l.teamsPair(s.get("Away"), wrdef.Away)
	wr.Expiration = l.durationIn(s.get("TeamsExpiration"), wrdef.Expiration, minTeamsExpiration, maxTeamsExpiration)
}

// crossPBX checks what a [PBX] Watch that is on needs from the other sections:
// the PBX's SIP server (an error), and an account that may write other users'
// presence (a warning: the PBX's state still reaches the targets through
// RichPresence.WinningTechnology).
func (l *loader) crossPBX(cfg *Config, pbxSec, sipSec *section) {
	if !cfg.PBX.Watching() {
		return
	}
	e := pbxSec.get("Watch")
	// A Server or OutboundProxy that is set but wrong is reported by [SIP] itself.
	if !sipSec.get("Server").set && !sipSec.get("OutboundProxy").set {
		l.bad(e, "watching needs the PBX's SIP server: set [SIP] Server = <host:port of the PBX> (the SUBSCRIBEs use [SIP]'s transport, outbound proxy, TLS and credentials), or set Watch = off")
	}
	wr := cfg.PBX.Write
	if wr.InCall == nil && wr.Ringing == nil && wr.DND == nil && wr.Away == nil {
		return // nothing is written to Teams
	}
	var deviceCode []string
	for _, a := range cfg.Accounts {
		if a.Auth == AuthDeviceCode {
			deviceCode = append(deviceCode, "[Account."+a.ID+"]")
		}
	}
	if len(deviceCode) == 0 {
		return
	}
	who, whose := "every account signs in", "calls on the PBX will not show in Teams"
	if len(deviceCode) < len(cfg.Accounts) {
		verb := " signs in"
		if len(deviceCode) > 1 {
			verb = " sign in"
		}
		who = strings.Join(deviceCode, " and ") + verb
		whose = "the calls of its users will not show in Teams"
		if len(deviceCode) > 1 {
			whose = "the calls of their users will not show in Teams"
		}
	}
	cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s:%d: %s = %s, but %s with the device code (Auth = devicecode); a device-code account can read but not write other users' presence, so %s; "+
		"use an app registration with a client secret or certificate (Auth = secret or certificate) and the application permission Presence.ReadWrite.All with admin consent",
		filepath.Base(l.path), e.line, e.label(), cfg.PBX.Watch.Watch, who, whose))
}

// allowedPairNames are write.Allowed as written in Presence.ini.
func allowedPairNames() []string {
	names := make([]string, len(write.Allowed))
	for i, p := range write.Allowed {
		names[i] = pairString(&p)
	}
	return names
}

// pairString is a Teams pair as Presence.ini writes it: Busy/InACall, or off for none.
func pairString(p *write.Pair) string {
	if p == nil {
		return "off"
	}
	return string(p.Availability) + "/" + string(p.Activity)
}

// teamsPair reads a Teams pair that setPresence accepts, written
// Availability/Activity or "Availability, Activity" in any case, or off (nil:
// nothing is written for that state).
func (l *loader) teamsPair(e entry, def *write.Pair) *write.Pair {
	if !e.set {
		return def
	}
	if isOff(e) {
		return nil
	}
	allowed := strings.Join(allowedPairNames(), ", ")
	a, act, ok := strings.Cut(e.value, "/")
	if !ok {
		a, act, ok = strings.Cut(e.value, ",")
	}
	if ok {
		av, okA := presence.ParseAvailability(a)
		ac, okB := presence.ParseActivity(act)
		if okA && okB {
			p := write.Pair{Availability: av, Activity: ac}
			if slices.Contains(write.Allowed, p) {
				return &p
			}
			l.bad(e, "setPresence cannot set %s (Microsoft Graph refuses it); use one of %s, or off to write nothing", pairString(&p), allowed)
			return def
		}
	}
	written := strings.Join(strings.Fields(strings.ReplaceAll(e.value, ",", "/")), "")
	l.bad(e, "not a Teams pair%s; write Availability/Activity, one of %s, or off to write nothing", didYouMean(written, allowedPairNames()), allowed)
	return def
}

// placeholderPattern finds {name} in a template.
var placeholderPattern = regexp.MustCompile(`\{[^{}]*\}`)

// watchURI reads [PBX] WatchURI: a SIP URI template naming {user}, {domain}
// and {extension}; empty watches each user's SIP URI.
func (l *loader) watchURI(e entry) string {
	if !e.set || e.value == "" {
		return ""
	}
	for _, ph := range placeholderPattern.FindAllString(e.value, -1) {
		if !slices.Contains(watch.URIPlaceholders, ph) {
			l.bad(e, "%s is not a placeholder; use %s, e.g. sip:watch-{extension}@{domain}", ph, strings.Join(watch.URIPlaceholders, ", "))
			return ""
		}
	}
	sample := watch.Settings{URI: e.value}
	if _, err := sample.Target(users.User{UPN: "a@b", SIPURI: "sip:1000@pbx.example", Extension: "1000"}); err != nil ||
		!(strings.HasPrefix(strings.ToLower(e.value), "sip:") || strings.HasPrefix(strings.ToLower(e.value), "sips:")) {
		l.bad(e, "not a SIP URI template; write e.g. sip:watch-{extension}@{domain} (the user's SIP URI gives {user} and {domain}, the users file {extension})")
		return ""
	}
	return e.value
}

// hostnamePattern is a DNS host name (RFC 1123 labels); the last label is
// checked not to be all digits, which would be a mistyped IPv4 address.
var hostnamePattern = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// notifyAddr reads [PBX] Listen: the local host:port the PBX's NOTIFYs come to,
// which is the Contact of every subscription, so the host must be an address
// (or name) the PBX can reach and the port fixed; empty leaves the choice to
// the watch (a free port on the address toward the PBX).
func (l *loader) notifyAddr(e entry) string {
	if !e.set {
		return ""
	}
	host, port, err := net.SplitHostPort(e.value)
	if err != nil || host == "" {
		l.bad(e, "not host:port; use this host's address toward the PBX and a port, e.g. 10.0.0.5:5070, or leave it empty for a free port on that address")
		return ""
	}
	if n, ok := portNumber(port); !ok || n < 1 {
		l.bad(e, "port %q is not a number from 1 to 65535; use e.g. 10.0.0.5:5070, or leave Listen empty for a free port", port)
		return ""
	}
	addr, aerr := netip.ParseAddr(host)
	labels := strings.Split(host, ".")
	switch {
	case aerr == nil && addr.IsUnspecified():
		l.bad(e, "%s is not an address the PBX can send NOTIFYs to (it is the Contact of every subscription); use this host's address toward the PBX, e.g. 10.0.0.5:%s, or leave Listen empty", host, port)
	case aerr != nil && (!hostnamePattern.MatchString(host) || strings.Trim(labels[len(labels)-1], "0123456789") == ""):
		l.bad(e, "%q is not a host name or IP address; use this host's address toward the PBX, e.g. 10.0.0.5:5070, or leave Listen empty", host)
	default:
		return e.value
	}
	return ""
}

// portNumber reads a port written in decimal digits only (no sign, no spaces).
func portNumber(s string) (int, bool) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n, n <= 65535
}
