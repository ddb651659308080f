package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/proxy"

	"github.com/presencebridge/presencebridge/internal/platform/redact"
)

// allowedProxyForms is appended to every proxy URL error.
const allowedProxyForms = `allowed: http://[user:password@]host:port, socks5://[user:password@]host:port, ` +
	`socks5h://[user:password@]host:port (the proxy resolves names), "direct" or "none" (no proxy), ` +
	`or empty to use HTTPS_PROXY from the environment; user and password are percent-decoded once, ` +
	`so percent-encode special characters in them (% as %25, @ as %40, : as %3A, # as %23, a space as %20)`

// Where a proxy setting came from, as named in Explain's advice.
const (
	settingProxyURL    = "[Proxy] URL"
	settingEnv         = "the HTTPS_PROXY environment variable"
	settingCredentials = "[Proxy] Username and Password"
)

type mode int

const (
	modeEnv    mode = iota // ProxyURL "": HTTPS_PROXY/HTTP_PROXY/NO_PROXY
	modeDirect             // "direct" / "none"
	modeHTTP               // http://
	modeSOCKS              // socks5:// or socks5h://
)

// route is a parsed ProxyURL plus, in modeEnv, the environment as read at
// parse time.
type route struct {
	mode     mode
	proxy    *url.URL          // modeHTTP, modeSOCKS; without user and password (see creds)
	creds    *proxyCreds       // modeHTTP, modeSOCKS: nil when none are configured
	env      *httpproxy.Config // modeEnv, and modeDirect (to say what it overrides)
	envHTTPS *url.URL          // parsed env.HTTPSProxy, nil when unset
	envHTTP  *url.URL          // parsed env.HTTPProxy, nil when unset
}

// proxyCreds are the credentials for the proxy of [Proxy] URL.
type proxyCreds struct {
	user, pass string
	setting    string // where they are configured: settingProxyURL or settingCredentials
}

// parseRoute validates the proxy options and reads the proxy environment
// variables. The environment is read here, not through net/http's
// ProxyFromEnvironment, which caches the first values it sees for the life
// of the process.
func parseRoute(o Options) (route, error) {
	rt, err := parseProxyURL(o.ProxyURL)
	if err != nil {
		return route{}, err
	}
	if o.ProxyUser == "" && o.ProxyPassword == "" {
		return rt, nil
	}
	switch {
	case rt.mode != modeHTTP && rt.mode != modeSOCKS:
		what := "is empty (HTTPS_PROXY from the environment)"
		if rt.mode == modeDirect {
			what = "says " + strings.TrimSpace(o.ProxyURL) + " (no proxy)"
		}
		return route{}, fmt.Errorf("[Proxy] Username and Password are set, but [Proxy] URL %s; put the proxy in [Proxy] URL as http://host:port (or socks5://host:port), or empty Username and Password", what)
	case rt.creds != nil:
		return route{}, fmt.Errorf("[Proxy] URL holds the user %q and [Proxy] Username is set too; keep one of them: Username and Password (the password can be encrypted), or user:password@ in [Proxy] URL", rt.creds.user)
	case o.ProxyUser == "":
		return route{}, errors.New("[Proxy] Password is set but [Proxy] Username is empty; put the user name in [Proxy] Username (DOMAIN\\user for NTLM)")
	}
	rt.creds = &proxyCreds{user: o.ProxyUser, pass: o.ProxyPassword, setting: settingCredentials}
	return rt, nil
}

// parseProxyURL validates raw ([Proxy] URL); see Options.ProxyURL.
func parseProxyURL(raw string) (route, error) {
	rt := route{env: httpproxy.FromEnvironment()}
	s := strings.TrimSpace(raw)
	switch strings.ToLower(s) {
	case "":
		rt.mode = modeEnv
		var err error
		if rt.envHTTPS, err = parseEnvProxy("HTTPS_PROXY", rt.env.HTTPSProxy); err != nil {
			return route{}, err
		}
		if rt.envHTTP, err = parseEnvProxy("HTTP_PROXY", rt.env.HTTPProxy); err != nil {
			return route{}, err
		}
		return rt, nil
	case "direct", "none":
		rt.mode = modeDirect
		rt.envHTTPS, _ = parseEnvProxy("HTTPS_PROXY", rt.env.HTTPSProxy)
		return rt, nil
	}

	bad := func(reason string) error {
		return fmt.Errorf("invalid proxy URL %q: %s; %s", redactRaw(s), reason, allowedProxyForms)
	}
	if !strings.Contains(s, "://") {
		return route{}, bad(fmt.Sprintf("the scheme is missing (did you mean %q?)", "http://"+redactRaw(s)))
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse errors quote the input, and even the bare reason (e.g.
		// `invalid port ":pa#ss" after host`) can carry part of a password.
		var ue *url.Error
		if errors.As(err, &ue) && !strings.Contains(s, "@") {
			return route{}, bad(ue.Err.Error())
		}
		return route{}, bad("it does not parse as a URL (are special characters in the password percent-encoded?)")
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		rt.mode = modeHTTP
	case "socks5", "socks5h":
		rt.mode = modeSOCKS
	default:
		return route{}, bad(fmt.Sprintf("scheme %q is not supported", u.Scheme))
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch {
	case u.Hostname() == "":
		return route{}, bad("the host is missing")
	case u.Port() == "":
		return route{}, bad("the port is missing")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return route{}, bad("a proxy URL has no path or query")
	}
	if u.User != nil && u.User.Username() == "" {
		return route{}, bad("the user name before the password is empty")
	}
	if u.User != nil {
		rt.creds = &proxyCreds{user: u.User.Username(), setting: settingProxyURL}
		rt.creds.pass, _ = u.User.Password()
		u.User = nil
	}
	u.Path = ""
	rt.proxy = u
	return rt, nil
}

// parseEnvProxy parses an environment proxy value as httpproxy does (a value
// without scheme means http://) and rejects bad values now: httpproxy would
// reject them per request, with the password in its error text.
func parseEnvProxy(name, v string) (*url.URL, error) {
	if v == "" {
		return nil, nil
	}
	// httpproxy retries a failed parse with "http://" prepended even when the
	// value has a scheme, which turns "http://a b:1" into a proxy named
	// "http"; only a value without a scheme gets the default here.
	raw := v
	if !strings.Contains(v, "://") {
		raw = "http://" + v
	}
	u, err := url.Parse(raw)
	if err != nil || !knownEnvScheme(u.Scheme) || u.Hostname() == "" {
		return nil, fmt.Errorf("environment variable %s holds an invalid proxy URL %q; fix or unset it, or set [Proxy] URL (%s)",
			name, redactRaw(v), allowedProxyForms)
	}
	return u, nil
}

func knownEnvScheme(s string) bool {
	switch s {
	case "http", "https", "socks5", "socks5h":
		return true
	}
	return false
}

// redactRaw hides the password of a proxy URL that may not even parse.
func redactRaw(s string) string {
	return redact.URL(s, redact.Options{Mask: "xxxxx"})
}

// proxyKind names a proxy URL's kind for messages.
func proxyKind(u *url.URL) string {
	switch u.Scheme {
	case "socks5", "socks5h":
		return "SOCKS5 proxy"
	case "https":
		return "HTTPS proxy"
	}
	return "HTTP proxy"
}

// canonicalAddr is the host:port net/http dials for a proxy URL (its
// connectMethod.addr), with the same default ports.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// authNote describes the credentials of an environment proxy URL (net/http
// sends Basic for an HTTP proxy) without the password.
func authNote(u *url.URL) string {
	if u.User == nil {
		return "no auth"
	}
	if u.Scheme == "socks5" || u.Scheme == "socks5h" {
		return "user/password auth as " + u.User.Username()
	}
	return "basic auth as " + u.User.Username()
}

// httpAuthNote describes how presencebridge answers the HTTP proxy of
// [Proxy] URL, without the password.
func (rt route) httpAuthNote() string {
	if rt.creds != nil {
		return fmt.Sprintf("user %s from %s, for Negotiate, NTLM or Basic as the proxy asks", rt.creds.user, rt.creds.setting)
	}
	if integratedAuth {
		return "no credentials configured: Negotiate or NTLM as the service account " + serviceAccount() + " if the proxy asks"
	}
	return "no auth"
}

func (rt route) describe() string {
	switch rt.mode {
	case modeDirect:
		if rt.envHTTPS != nil {
			return "direct (ignoring HTTPS_PROXY from the environment)"
		}
		return "direct"
	case modeHTTP:
		return fmt.Sprintf("via HTTP proxy %s (%s)", rt.proxy.Host, rt.httpAuthNote())
	case modeSOCKS:
		dns := "names resolved on this machine"
		if rt.proxy.Scheme == "socks5h" {
			dns = "names resolved by the proxy"
		}
		auth := "no auth"
		if rt.creds != nil {
			auth = fmt.Sprintf("user/password auth as %s from %s", rt.creds.user, rt.creds.setting)
		}
		return fmt.Sprintf("via SOCKS5 proxy %s (%s; %s)", rt.proxy.Host, auth, dns)
	}
	if rt.envHTTPS == nil {
		if rt.envHTTP != nil {
			return "direct (HTTP_PROXY from the environment applies to http:// URLs only; HTTPS to Microsoft needs HTTPS_PROXY or [Proxy] URL)"
		}
		return "direct (no [Proxy] URL and no HTTPS_PROXY in the environment)"
	}
	s := fmt.Sprintf("via HTTPS_PROXY from the environment (%s %s, %s", proxyKind(rt.envHTTPS), rt.envHTTPS.Host, authNote(rt.envHTTPS))
	if rt.env.NoProxy != "" {
		s += "; NO_PROXY=" + rt.env.NoProxy
	}
	return s + ")"
}

// configure sets the proxy selection, the dialer and the CONNECT reply check
// on tr.
func (rt route) configure(tr *http.Transport, base *net.Dialer, logger *slog.Logger) {
	hd := &hopDialer{base: base, proxies: map[string]proxyHop{}}
	tr.DialContext = hd.DialContext
	tr.Proxy = nil

	switch rt.mode {
	case modeHTTP:
		// presencebridge's own CONNECT: net/http's cannot keep one connection
		// through an NTLM or Negotiate handshake. net/http does TLS on the
		// tunnel DialContext returns, as it would on a direct connection.
		addr := canonicalAddr(rt.proxy)
		hd.proxies[addr] = proxyHop{kind: "HTTP proxy", setting: settingProxyURL}
		cd := &connectDialer{hop: hd, proxyAddr: addr, proxyHost: rt.proxy.Hostname(), creds: rt.creds,
			setting: settingProxyURL, logger: logger}
		tr.DialContext = cd.DialContext
	case modeSOCKS:
		addr := canonicalAddr(rt.proxy)
		hd.proxies[addr] = proxyHop{kind: "SOCKS5 proxy", setting: settingProxyURL}
		var auth *proxy.Auth
		if rt.creds != nil {
			auth = &proxy.Auth{User: rt.creds.user, Password: rt.creds.pass}
		}
		// proxy.SOCKS5 never fails for a "tcp" network; its result implements ContextDialer.
		d, _ := proxy.SOCKS5("tcp", addr, auth, hd)
		sd := &socksDialer{
			proxyAddr: addr,
			setting:   settingProxyURL,
			remoteDNS: rt.proxy.Scheme == "socks5h",
			resolver:  base.Resolver,
			dialer:    d.(proxy.ContextDialer),
		}
		if rt.creds != nil {
			sd.user, sd.setting = rt.creds.user, rt.creds.setting
		}
		tr.DialContext = sd.DialContext
	case modeEnv:
		// net/http's CONNECT (Basic only), which also serves https:// and
		// socks5:// proxies and NO_PROXY from the environment.
		tr.OnProxyConnectResponse = checkConnectResponse(settingEnv)
		for _, u := range []*url.URL{rt.envHTTP, rt.envHTTPS} {
			if u != nil {
				hd.proxies[canonicalAddr(u)] = proxyHop{kind: proxyKind(u), setting: settingEnv}
			}
		}
		pick := rt.env.ProxyFunc()
		tr.Proxy = func(r *http.Request) (*url.URL, error) {
			u, err := pick(r.URL)
			if err != nil {
				// httpproxy quotes the raw value, password included; parseRoute
				// validated it already, so this is not expected.
				return nil, errors.New("invalid proxy URL in HTTPS_PROXY/HTTP_PROXY")
			}
			return u, nil
		}
	}
}

// proxyHop says which proxy an address belongs to, for dialError.
type proxyHop struct {
	kind    string // "HTTP proxy", "SOCKS5 proxy", ...
	setting string // where it is configured
}

// hopDialer dials TCP and tags failures with the hop they were meant for: a
// known proxy address or the target itself. net/http dials the proxy (not the
// target) when one is in use, so the address alone tells the hop.
type hopDialer struct {
	base    *net.Dialer
	proxies map[string]proxyHop // canonical host:port -> proxy
}

// Dial implements proxy.Dialer.
func (d *hopDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

// DialContext implements proxy.ContextDialer and http.Transport.DialContext.
func (d *hopDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.base.DialContext(ctx, network, addr)
	if err != nil {
		de := &dialError{addr: addr, err: err}
		if p, ok := d.proxies[strings.ToLower(addr)]; ok {
			de.proxy, de.kind, de.setting = true, p.kind, p.setting
		}
		return nil, de
	}
	return c, nil
}

// socksDialer reaches targets through a SOCKS5 proxy (golang.org/x/net/proxy,
// RFC 1928 with RFC 1929 user/password). For socks5:// it resolves the target
// name on this machine first, as curl does; for socks5h:// the proxy resolves.
type socksDialer struct {
	proxyAddr string
	user      string
	setting   string // where user is configured; [Proxy] URL without one
	remoteDNS bool
	resolver  *net.Resolver // nil: net.DefaultResolver
	dialer    proxy.ContextDialer
}

func (s *socksDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	target := addr
	if !s.remoteDNS {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && net.ParseIP(host) == nil {
			ips, err := s.resolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, &dialError{addr: addr, localDNSForSOCKS: true, err: err}
			}
			target = net.JoinHostPort(pickIP(ips).String(), port)
		}
	}
	c, err := s.dialer.DialContext(ctx, network, target)
	if err != nil {
		return nil, &socksError{proxy: s.proxyAddr, target: addr, user: s.user, setting: s.setting, err: err}
	}
	return c, nil
}

// pickIP prefers IPv4: SOCKS proxies in the field often have no IPv6 egress.
func pickIP(ips []net.IPAddr) net.IP {
	for _, ip := range ips {
		if ip.IP.To4() != nil {
			return ip.IP
		}
	}
	return ips[0].IP
}

// checkConnectResponse returns the Transport.OnProxyConnectResponse hook for
// proxies from the environment, which net/http's own CONNECT serves. For a
// non-200 CONNECT reply net/http itself returns only errors.New(status text)
// (net/http/transport.go, dialConn), which names neither the proxy nor the
// status code; this hook returns a *connectError instead.
func checkConnectResponse(setting string) func(context.Context, *url.URL, *http.Request, *http.Response) error {
	return func(_ context.Context, proxyURL *url.URL, req *http.Request, resp *http.Response) error {
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		ce := newConnectError(canonicalAddr(proxyURL), req.Host, setting, resp)
		if proxyURL.User != nil {
			ce.user = proxyURL.User.Username()
			ce.sentCredentials = true
			ce.scheme = schemeBasic
			ce.credSetting = setting
		}
		return ce
	}
}
