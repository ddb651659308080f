// Package redact hides what a URL may carry that is secret (the password of
// user:password@, a token in the query) before the URL is shown in a log line,
// an error or a printed configuration. config, transport and the CTI target all
// show URLs through it, each with its own mask.
package redact

import "strings"

// Options say how URL shows a URL.
type Options struct {
	// Mask stands for the password of user:password@, e.g. "***".
	Mask string
	// DropQuery leaves out the ?query (an API key or a token may be in it) up
	// to a #fragment. Not for a proxy URL as Presence.ini takes it, whose
	// password may hold a literal '?'.
	DropQuery bool
}

// URL returns rawURL with its secrets hidden and the rest as written. rawURL
// need not parse: an error about a URL that does not parse shows it too. The
// user info ends at the last '@' after the scheme's "://" and its first ':'
// starts the password, the way Presence.ini's [Proxy] URL is read, so a
// password holding '@', ':', '/', '?', '#' or even "://" is hidden whole; an
// '@' further on (in a path) can make it hide more than the password, never
// less. A URL without a password keeps its user name.
func URL(rawURL string, o Options) string {
	s, start := rawURL, 0
	if i := strings.Index(s, "://"); i >= 0 && isScheme(s[:i]) {
		start = i + 3
	}
	if o.DropQuery {
		rest := s[start:]
		if f := strings.IndexByte(rest, '#'); f >= 0 {
			rest = rest[:f]
		}
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			s = s[:start+q] + s[start+len(rest):]
		}
	}
	at := strings.LastIndexByte(s[start:], '@')
	if at < 0 {
		return s
	}
	c := strings.IndexByte(s[start:start+at], ':')
	if c < 0 {
		return s
	}
	return s[:start+c+1] + o.Mask + s[start+at:]
}

// isScheme reports whether s can be a URL scheme (RFC 3986 section 3.1, or
// empty): letters, digits, '+', '-' and '.'.
func isScheme(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Endpoint is rawURL as an error names a target's endpoint: without its query,
// which may carry a token, and with a password as ***.
func Endpoint(rawURL string) string {
	return URL(rawURL, Options{Mask: "***", DropQuery: true})
}

// OneLine shortens a response body to one line of valid UTF-8 for an error
// message: white space runs become one space, and it is cut after 160 bytes.
func OneLine(b []byte) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	for i := range s { // cut on a character boundary
		if i > 160 {
			return s[:i] + "..."
		}
	}
	return s
}
