package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// dialError is a failed TCP connection (name resolution included), tagged
// with the hop it was meant for. Its text is the underlying error's, so the
// error strings callers see are unchanged.
type dialError struct {
	addr             string // host:port that was dialed
	proxy            bool   // addr is the proxy, not the target
	kind             string // "HTTP proxy", "SOCKS5 proxy" when proxy
	setting          string // where the proxy is configured, when proxy
	localDNSForSOCKS bool   // target name resolved here for a socks5:// proxy
	err              error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Timeout and Temporary keep net.Error semantics for url.Error.Timeout and
// net.OpError.Timeout, which type-assert their direct Err.
func (e *dialError) Timeout() bool {
	return netTimeout(e.err)
}

func (e *dialError) Temporary() bool {
	var ne interface{ Temporary() bool }
	return errors.As(e.err, &ne) && ne.Temporary()
}

// socksError is a failure of the SOCKS5 proxy or of its negotiation.
type socksError struct {
	proxy, target, user, setting string
	err                          error
}

func (e *socksError) Error() string {
	return fmt.Sprintf("via SOCKS5 proxy %s: %v", e.proxy, e.err)
}
func (e *socksError) Unwrap() error { return e.err }
func (e *socksError) Timeout() bool {
	return netTimeout(e.err)
}

// connectError is a non-200 reply of an HTTP proxy to CONNECT.
type connectError struct {
	proxy, target   string
	status          int
	text            string
	user            string   // whose credentials were sent, when sentCredentials
	sentCredentials bool     // the last CONNECT carried credentials
	scheme          string   // the scheme of the last CONNECT's credentials, "" none
	handshake       bool     // an NTLM/Negotiate challenge was answered: a full handshake
	integrated      bool     // the credentials were the service account's (Windows)
	schemes         []string // Proxy-Authenticate schemes offered on 407
	setting         string   // where the proxy is configured
	credSetting     string   // where the credentials are configured, "" none
	native          bool     // presencebridge's own CONNECT ([Proxy] URL), not net/http's
}

// newConnectError is the *connectError for a non-200 CONNECT reply resp:
// its status and the schemes it offers; callers add what they sent.
func newConnectError(proxy, target, setting string, resp *http.Response) *connectError {
	ce := &connectError{
		proxy:   proxy,
		target:  target,
		status:  resp.StatusCode,
		text:    strings.TrimSpace(strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode))),
		setting: setting,
		schemes: parseChallenges(resp.Header.Values("Proxy-Authenticate")).schemes(),
	}
	if ce.text == "" {
		ce.text = http.StatusText(resp.StatusCode)
	}
	return ce
}

func (e *connectError) Error() string {
	return fmt.Sprintf("proxy %s answered CONNECT %s with %d %s", e.proxy, e.target, e.status, e.text)
}

// Explain turns a failure of a client from NewClient into one sentence that
// names the failed hop (DNS, the proxy, the target, TLS) and the fix, for
// logs and the verify command. It returns "" when it has nothing more
// specific to say than err itself. It never includes a password.
func Explain(err error) string {
	if err == nil {
		return ""
	}
	host := "the server"
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			host = u.Host
		}
	}

	var ce *connectError
	if errors.As(err, &ce) {
		return explainConnect(ce)
	}
	var pe *proxyIOError
	if errors.As(err, &pe) {
		return explainProxyIO(pe)
	}
	var ae *authError
	if errors.As(err, &ae) {
		return explainAuth(ae)
	}
	var de *dialError
	if errors.As(err, &de) {
		if de.proxy {
			return explainProxyDial(de)
		}
		return explainTargetDial(de)
	}
	var se *socksError
	if errors.As(err, &se) {
		return explainSOCKS(se.proxy, se.target, se.user, se.setting, se.err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && strings.HasPrefix(oe.Op, "socks") {
		// net/http's own SOCKS5 client, used for socks5:// in HTTPS_PROXY.
		p, t := "", host
		if oe.Source != nil {
			p = oe.Source.String()
		}
		if oe.Addr != nil {
			t = oe.Addr.String()
		}
		return explainSOCKS(p, t, "", settingEnv, oe.Err)
	}
	viaProxy := errors.As(err, &oe) && oe.Op == "proxyconnect"
	if viaProxy {
		host = "the proxy"
	}
	if s := explainTLS(err, host); s != "" {
		return s
	}
	if viaProxy {
		return fmt.Sprintf("Proxy: cannot set up the connection to the proxy (%v); check [Proxy] URL or HTTPS_PROXY", oe.Err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("DNS: cannot resolve %s (%s); check the DNS server or set [Proxy] URL so that a proxy resolves it", dnsErr.Name, dnsErr.Err)
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("Network: the connection to %s was closed before a reply; a proxy or firewall in between may be dropping it (check [Proxy] URL and the firewall)", host)
	case isReset(err):
		return fmt.Sprintf("Network: the connection to %s was reset; a proxy or firewall in between may be blocking it (check [Proxy] URL and the firewall)", host)
	case errors.Is(err, context.Canceled):
		return ""
	case isTimeout(err):
		return fmt.Sprintf("Network: no reply from %s in time; check the network path and the proxy, or raise the timeout if %s is just slow", host, host)
	}
	return ""
}

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || netTimeout(err)
}

// netTimeout says whether err wraps a net.Error that timed out: the Timeout
// of the error types here, which wrap one.
func netTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func explainConnect(e *connectError) string {
	if e.status == 407 {
		return explainAuthRequired(e)
	}
	switch {
	case e.status == 403:
		return fmt.Sprintf("Proxy: the HTTP proxy %s refused to open a tunnel to %s (403 %s); ask the proxy administrators to allow HTTPS (CONNECT) to %s",
			e.proxy, e.target, e.text, e.target)
	case e.status == 502 || e.status == 503 || e.status == 504:
		return fmt.Sprintf("Proxy: the HTTP proxy %s could not reach %s (%d %s); the proxy's DNS or outbound access to that host is failing, or the host name is wrong",
			e.proxy, e.target, e.status, e.text)
	}
	return fmt.Sprintf("Proxy: the HTTP proxy %s answered the CONNECT to %s with %d %s; check %s and the proxy's rules",
		e.proxy, e.target, e.status, e.text, e.setting)
}

// The advice for a proxy that asks for NTLM or Negotiate and has no
// credentials to answer with.
const (
	adviceDomainAccount = `put a domain account in [Proxy] Username as DOMAIN\user and its password in [Proxy] Password`
	adviceServiceAcct   = "or leave them empty to use the service account (run the service as a domain account the proxy allows)"
)

// explainAuthRequired explains a 407 Proxy Authentication Required: which
// scheme the proxy asked for, and what to put where.
func explainAuthRequired(e *connectError) string {
	const status = "(407 Proxy Authentication Required)"
	connScheme := "" // the connection-based schemes offered: NTLM, Negotiate
	basic := false   // Basic is offered
	var unsupported []string
	for _, s := range e.schemes {
		switch {
		case strings.EqualFold(s, schemeNTLM), strings.EqualFold(s, schemeNegotiate):
			if connScheme != "" {
				connScheme += " or "
			}
			connScheme += s
		case strings.EqualFold(s, schemeBasic):
			basic = true
		default:
			unsupported = append(unsupported, s)
		}
	}
	advice := adviceDomainAccount // for NTLM or Negotiate without credentials
	if integratedAuth {
		advice += ", " + adviceServiceAcct
	}
	credHint := func() string {
		switch e.credSetting {
		case settingProxyURL:
			return "check the user and password in [Proxy] URL (they are percent-decoded once: write a % in them as %25)"
		case settingCredentials:
			return "check [Proxy] Username and Password"
		}
		return "check the user and password in " + e.credSetting + " (percent-encode special characters in them, a % as %25)"
	}
	switch {
	case !e.native && connScheme != "" && !basic:
		// net/http's CONNECT for HTTPS_PROXY sends only Basic.
		return fmt.Sprintf("Proxy: the HTTP proxy %s from %s asks for %s authentication %s, which presencebridge answers only for a proxy in [Proxy] URL; "+
			"set [Proxy] URL = http://%s and %s", e.proxy, e.setting, connScheme, status, e.proxy, advice)
	case e.integrated && e.handshake:
		return fmt.Sprintf("Proxy: the HTTP proxy %s refused the service account %s after a full %s handshake %s; "+
			"run the service as a domain account the proxy allows, or put one in [Proxy] Username (DOMAIN\\user) and Password", e.proxy, e.user, e.scheme, status)
	case e.sentCredentials && (e.scheme == schemeNTLM || e.scheme == schemeNegotiate) && e.handshake:
		hint := ""
		if e.scheme == schemeNegotiate {
			hint = "; presencebridge answers Negotiate with NTLM, so a proxy that takes only Kerberos refuses it: ask for NTLM or Basic"
			if integratedAuth {
				hint += ", or leave Username and Password empty to use the service account's Kerberos ticket"
			}
		}
		return fmt.Sprintf("Proxy: the HTTP proxy %s refused the credentials of user %q after a full %s handshake %s; %s "+
			"(NTLM wants DOMAIN\\user or user@domain), and that the account is enabled and not locked%s", e.proxy, e.user, e.scheme, status, credHint(), hint)
	case e.sentCredentials && (e.scheme == schemeNTLM || e.scheme == schemeNegotiate):
		return fmt.Sprintf("Proxy: the HTTP proxy %s offered %s but did not answer the negotiation of user %q with a challenge %s; "+
			"ask the proxy administrators whether %s is enabled for this machine, or to allow Basic", e.proxy, e.scheme, e.user, status, e.scheme)
	case e.sentCredentials && (basic || len(e.schemes) == 0):
		return fmt.Sprintf("Proxy: the HTTP proxy %s refused the Basic credentials of user %q %s; %s",
			e.proxy, e.user, status, credHint())
	case connScheme != "":
		return fmt.Sprintf("Proxy: the HTTP proxy %s asks for %s authentication %s: %s", e.proxy, connScheme, status, advice)
	case basic || len(e.schemes) == 0:
		where := "[Proxy] URL as http://user:password@host:port, or in [Proxy] Username and Password"
		if !e.native {
			where = e.setting + " as http://user:password@host:port"
		}
		asks := "asks for Basic authentication"
		if !basic {
			asks = "requires authentication"
		}
		return fmt.Sprintf("Proxy: the HTTP proxy %s %s %s; put the user and password in %s", e.proxy, asks, status, where)
	}
	return fmt.Sprintf("Proxy: the HTTP proxy %s asks for %s authentication %s, which presencebridge does not speak (it answers Basic, NTLM and Negotiate); "+
		"ask the proxy administrators to allow one of those for this machine or to exempt %s", e.proxy, strings.Join(unsupported, "/"), status, e.target)
}

// explainProxyIO explains a broken CONNECT handshake.
func explainProxyIO(e *proxyIOError) string {
	during := "the CONNECT to " + e.target
	if e.midHandshake {
		during = "the " + e.scheme + " handshake for " + e.target
	}
	switch {
	case isTimeout(e.err):
		return fmt.Sprintf("Proxy: the HTTP proxy %s did not answer %s in time; check that %s names the proxy's HTTP port, and the proxy's outbound access to %s",
			e.proxy, during, e.setting, e.target)
	case errors.Is(e.err, io.EOF), errors.Is(e.err, io.ErrUnexpectedEOF), isReset(e.err):
		return fmt.Sprintf("Proxy: the HTTP proxy %s closed the connection during %s; check that %s points at an HTTP proxy (a SOCKS5 proxy needs socks5://)",
			e.proxy, during, e.setting)
	case e.midHandshake:
		return fmt.Sprintf("Proxy: %s broke off %s (%v); the proxy must keep the connection open through the handshake", e.proxy, during, e.err)
	}
	return fmt.Sprintf("Proxy: %s did not answer %s with HTTP (%v); check the host, port and scheme in %s (an HTTP proxy needs http://, a SOCKS5 proxy socks5://)",
		e.proxy, during, e.err, e.setting)
}

// explainAuth explains a failure on this side of an NTLM or Negotiate handshake.
func explainAuth(e *authError) string {
	if e.integrated {
		return fmt.Sprintf("Proxy: the HTTP proxy %s asks for %s, and Windows could not answer it as the service account %s (%v); "+
			"%s instead", e.proxy, e.scheme, serviceAccount(), e.err, adviceDomainAccount)
	}
	return fmt.Sprintf("Proxy: cannot answer the %s challenge of the HTTP proxy %s (%v); ask the proxy administrators to allow NTLMv2 or Basic for this machine",
		e.scheme, e.proxy, e.err)
}

func explainProxyDial(e *dialError) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(e.err, &dnsErr):
		return fmt.Sprintf("DNS: cannot resolve the %s host %s (%s); check the host name in %s and the DNS server", e.kind, dnsErr.Name, dnsErr.Err, e.setting)
	case isRefused(e.err):
		return fmt.Sprintf("Proxy: the %s %s refused the connection; check the host and port in %s and that the proxy is running", e.kind, e.addr, e.setting)
	case isTimeout(e.err):
		return fmt.Sprintf("Proxy: connecting to the %s %s timed out; check the address in %s and that the firewall lets this machine reach it", e.kind, e.addr, e.setting)
	case isUnreachable(e.err):
		return fmt.Sprintf("Proxy: no route to the %s %s; check the address in %s and this machine's network", e.kind, e.addr, e.setting)
	}
	return fmt.Sprintf("Proxy: cannot connect to the %s %s (%v); check %s", e.kind, e.addr, e.err, e.setting)
}

func explainTargetDial(e *dialError) string {
	const viaProxy = "set [Proxy] URL if outbound traffic must go through a proxy"
	var dnsErr *net.DNSError
	switch {
	case errors.As(e.err, &dnsErr) && e.localDNSForSOCKS:
		return fmt.Sprintf("DNS: cannot resolve %s (%s) on this machine; check the DNS server or set [Proxy] URL to socks5h:// so that the SOCKS5 proxy resolves it", dnsErr.Name, dnsErr.Err)
	case errors.As(e.err, &dnsErr):
		return fmt.Sprintf("DNS: cannot resolve %s (%s); check the DNS server or set [Proxy] URL so that a proxy resolves it", dnsErr.Name, dnsErr.Err)
	case isRefused(e.err):
		return fmt.Sprintf("Network: the target %s refused the connection; check the host name and port, and that outbound HTTPS is allowed, or %s", e.addr, viaProxy)
	case isTimeout(e.err):
		return fmt.Sprintf("Network: connecting to the target %s timed out; a firewall may be dropping outbound HTTPS: allow it, or %s", e.addr, viaProxy)
	case isUnreachable(e.err):
		return fmt.Sprintf("Network: no route to the target %s; check this machine's network and gateway, or %s", e.addr, viaProxy)
	}
	return fmt.Sprintf("Network: cannot connect to the target %s (%v); check the network, or %s", e.addr, e.err, viaProxy)
}

// explainSOCKS reads the errors of golang.org/x/net/internal/socks (and its
// copy in net/http), which are plain strings (see client.go and socks.go
// there): the reply codes of RFC 1928 section 6 come as "unknown error <text>".
func explainSOCKS(proxyAddr, target, user, setting string, err error) string {
	if proxyAddr == "" {
		proxyAddr = "(from HTTPS_PROXY)"
	}
	var msg string
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		msg = oe.Err.Error()
	} else {
		msg = err.Error()
	}
	switch {
	case strings.Contains(msg, "username/password authentication failed"):
		who := "the credentials"
		if user != "" {
			who = fmt.Sprintf("the credentials of user %q", user)
		}
		return fmt.Sprintf("SOCKS5: the proxy %s refused %s; check user/password in %s", proxyAddr, who, setting)
	case strings.Contains(msg, "no acceptable authentication methods"):
		if user == "" {
			return fmt.Sprintf("SOCKS5: the proxy %s requires authentication; put the user and password in %s as socks5://user:password@host:port", proxyAddr, setting)
		}
		return fmt.Sprintf("SOCKS5: the proxy %s accepts neither no-auth nor user/password (RFC 1929) authentication; ask the proxy administrators which method it needs", proxyAddr)
	case strings.HasPrefix(msg, "unknown error "):
		return fmt.Sprintf("SOCKS5: the proxy %s could not connect to the target %s (%s); check the proxy's rules and outbound access to that host",
			proxyAddr, target, strings.TrimPrefix(msg, "unknown error "))
	case strings.HasPrefix(msg, "unexpected protocol version"):
		return fmt.Sprintf("SOCKS5: %s does not speak SOCKS5 (%s); check the host, port and scheme in %s (an HTTP proxy needs http://)", proxyAddr, msg, setting)
	case isTimeout(err):
		return fmt.Sprintf("SOCKS5: the proxy %s did not complete the handshake in time; check that %s points at a SOCKS5 proxy", proxyAddr, setting)
	}
	return fmt.Sprintf("SOCKS5: the handshake with the proxy %s failed (%s); check %s", proxyAddr, msg, setting)
}

// explainTLS explains certificate verification failures and non-TLS replies.
func explainTLS(err error, host string) string {
	subject := "the certificate of " + host
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		issuer := ""
		if ua.Cert != nil {
			issuer = fmt.Sprintf(" (issuer %q)", ua.Cert.Issuer.String())
		}
		return fmt.Sprintf("TLS: %s is signed by an unknown authority%s; if a TLS-inspecting proxy sits in between, set [Proxy] CAFile to its CA certificate (PEM)", subject, issuer)
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return fmt.Sprintf("TLS: the certificate presented for %s is not valid for %s (it covers %s); check the host name in the configuration, "+
			"or whether a proxy or firewall answers in its place", host, he.Host, certNames(he.Certificate))
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		if ci.Reason == x509.Expired {
			detail := ""
			if ci.Detail != "" {
				detail = " (" + ci.Detail + ")"
			}
			return fmt.Sprintf("TLS: %s has expired or is not yet valid%s; check this machine's clock, then the certificate of the server or of the TLS-inspecting proxy", subject, detail)
		}
		return fmt.Sprintf("TLS: %s is not valid (%v); if a TLS-inspecting proxy sits in between, its certificates must be usable for servers", subject, ci)
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return fmt.Sprintf("TLS: %s did not answer with TLS; check the host and port, and the scheme of the proxy in [Proxy] URL or HTTPS_PROXY", host)
	}
	return ""
}

// certNames lists the names a certificate is valid for, shortened.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no names"
	}
	var names []string
	for _, n := range c.DNSNames {
		if net.ParseIP(n) != nil {
			// Some TLS-inspecting proxies (Squid 5 for a CONNECT to an IP) do this.
			n += " (as a DNS name, which does not cover an IP address)"
		}
		names = append(names, n)
	}
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName+" (common name only)")
	}
	if len(names) == 0 {
		return "no names"
	}
	if len(names) > 5 {
		names = append(names[:5], fmt.Sprintf("and %d more", len(names)-5))
	}
	return strings.Join(names, ", ")
}
