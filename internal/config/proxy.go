package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/presencebridge/presencebridge/internal/platform/transport"
)

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

// TransportOptions are the transport.Options of [Proxy]: the route, the
// credentials and the CA file; callers add Timeout and Logger.
func (p Proxy) TransportOptions() transport.Options {
	return transport.Options{ProxyURL: p.URL, ProxyUser: p.Username, ProxyPassword: p.Password.Reveal(), CAFile: p.CAFile}
}

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

// proxy reads [Proxy]: the URL (or direct), the credentials in it or beside it,
// and the CA of a TLS-inspecting proxy.
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

// decodeUserinfo percent-decodes the user name or password of a proxy URL once.
// Its problems never quote the value: what is the password is a secret.
func decodeUserinfo(v, what string) (string, string) {
	d, err := url.PathUnescape(v) // fails only on a % not followed by two hex digits
	if err != nil {
		return "", fmt.Sprintf("the %s holds a %% that is not followed by two hex digits; "+
			"the user name and password are percent-decoded once (%%40 is @), so write a %% itself as %%25", what)
	}
	if !utf8.ValidString(d) || strings.ContainsAny(d, "\r\n\x00") {
		return "", fmt.Sprintf("the %s is not UTF-8 text after percent-decoding; encode a character such as é as its UTF-8 bytes, %%C3%%A9, or write it as it is", what)
	}
	return d, ""
}
