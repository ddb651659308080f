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
	"strconv"
	"strings"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/redact"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
)

// boolean reads a switch: 1, true, yes, on or 0, false, no, off.
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

// duration reads a Go duration (10s, 2m) of at least least.
func (l *loader) duration(e entry, def, least time.Duration) time.Duration {
	if !e.set {
		return def
	}
	d, ok := l.parseDuration(e)
	if !ok {
		return def
	}
	if d < least {
		l.bad(e, "too short; use %s or more", formatDuration(least))
		return def
	}
	return d
}

// durationIn reads a Go duration from least to most.
func (l *loader) durationIn(e entry, def, least, most time.Duration) time.Duration {
	if !e.set {
		return def
	}
	d, ok := l.parseDuration(e)
	switch {
	case !ok:
		return def
	case d < least:
		l.bad(e, "too short; use %s to %s", formatDuration(least), formatDuration(most))
		return def
	case d > most:
		l.bad(e, "too long; use %s to %s", formatDuration(least), formatDuration(most))
		return def
	}
	return d
}

// parseDuration reads a set value as a Go duration, or reports why it is none.
func (l *loader) parseDuration(e entry) (time.Duration, bool) {
	d, err := time.ParseDuration(e.value)
	if err == nil {
		return d, true
	}
	if _, numErr := parseFinite(e.value); numErr == nil {
		l.bad(e, "a duration needs a unit; write e.g. %ss for seconds or %sm for minutes", e.value, e.value)
		return 0, false
	}
	// Microsoft's pages write durations in ISO 8601 (setPresence's PT5M).
	if upper := strings.ToUpper(e.value); len(upper) > 2 && strings.HasPrefix(upper, "PT") {
		if _, err := time.ParseDuration(strings.ToLower(upper[2:])); err == nil {
			l.bad(e, "an ISO 8601 duration; write it as %s (durations here are a number with a unit: 30s, 15m, 1h30m)", strings.ToLower(upper[2:]))
			return 0, false
		}
	}
	l.bad(e, "not a duration; use a number with a unit, e.g. 10s or 2m")
	return 0, false
}

// isOff reports a value of 0 or off, which turns a feature off.
func isOff(e entry) bool { return e.set && (e.value == "0" || strings.EqualFold(e.value, "off")) }

// durationOrOff is a duration where 0 or off turns the feature off.
func (l *loader) durationOrOff(e entry, def, least time.Duration) time.Duration {
	if isOff(e) {
		return 0
	}
	return l.duration(e, def, least)
}

// integer reads a whole number (1_500 allowed) of at least least.
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

// pathOr resolves a file name relative to the INI's directory; empty gives def.
func (l *loader) pathOr(e entry, def string) string {
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

// parseHTTPSURL reads an https URL without credentials, query or fragment; the
// problem, if any, ends with example.
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

// redactRawURL is a URL as config shows it in errors and the effective
// configuration, parsable or not: its password is "***".
func redactRawURL(v string) string {
	return redact.URL(v, redact.Options{Mask: redacted})
}

// isLoopbackURL reports a URL whose host is localhost or a loopback address.
func isLoopbackURL(v string) bool {
	u, err := url.Parse(v)
	if err != nil {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return strings.EqualFold(h, "localhost") || (ip != nil && ip.IsLoopback())
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
