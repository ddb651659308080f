// Package transport builds the *http.Client that carries all traffic to the
// Microsoft login endpoint and to Graph: the customer's outbound proxy (HTTP
// CONNECT with Basic, NTLM or Negotiate authentication, SOCKS5, or
// HTTPS_PROXY from the environment), an extra CA bundle for TLS-inspecting
// proxies, and timeouts. Explain turns the failures of that client into one
// sentence for a field engineer.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// DefaultTimeout is the overall per-request cap used when Options.Timeout is 0.
const DefaultTimeout = 60 * time.Second

// Transport tuning. Graph calls are few and large (650 ids a presence request),
// and all of them go to a handful of hosts, so a small idle pool per host is
// enough to keep connections warm between poll cycles.
const (
	dialTimeout         = 30 * time.Second
	dialKeepAlive       = 30 * time.Second
	tlsHandshakeTimeout = 15 * time.Second // a TLS-inspecting proxy mints a certificate first
	idleConnTimeout     = 90 * time.Second
	maxIdleConns        = 64
	maxIdleConnsPerHost = 16
)

// Options configures NewClient. The zero value is usable: proxy from the
// environment, system roots, 60 s per request.
type Options struct {
	// ProxyURL selects the route to Microsoft:
	//   ""                                   HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment, read by NewClient
	//   "http://[user:pass@]host:port"       HTTP proxy (CONNECT); with credentials, Negotiate, NTLM or Basic as the proxy asks
	//   "socks5://[user:pass@]host:port"     SOCKS5 (RFC 1928/1929), names resolved on this machine
	//   "socks5h://[user:pass@]host:port"    SOCKS5, names resolved by the proxy
	//   "direct" or "none"                   no proxy, even if the environment sets one
	// User and password are percent-decoded once, as url.Parse does.
	ProxyURL string
	// ProxyUser and ProxyPassword are the proxy's credentials when they are not
	// in ProxyURL ([Proxy] Username and Password; both at once is an error).
	// For an HTTP proxy the user is as the proxy wants it (DOMAIN\user or
	// user@domain for NTLM); for SOCKS5 they are RFC 1929 user and password.
	// On Windows, an HTTP proxy that asks for Negotiate or NTLM while no
	// credentials are configured gets those of the account the service runs as.
	ProxyUser     string
	ProxyPassword string
	// CAFile is a PEM bundle trusted in addition to the system roots, typically
	// the CA of a TLS-inspecting proxy.
	CAFile string
	// Timeout caps a whole request (connect, headers and body) as a safety net;
	// callers set tighter deadlines with contexts. 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives setup messages; nil discards them.
	Logger *slog.Logger
}

// NewClient returns the HTTP client for login and Graph traffic. Its Transport
// is a tuned *http.Transport: HTTP/2 when the server offers it, TLS 1.2 at
// least, and certificate verification always on (there is no way to turn it
// off). Errors name the setting, the value (without password) and the fix.
func NewClient(o Options) (*http.Client, error) {
	return newClient(o, &net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive})
}

// newClient is NewClient with the base dialer injectable, so tests can point
// name resolution at a fake DNS server on loopback.
func newClient(o Options, base *net.Dialer) (*http.Client, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	timeout := o.Timeout
	switch {
	case timeout < 0:
		return nil, fmt.Errorf("request timeout %s is negative; use a positive duration, or 0 for the default %s", timeout, DefaultTimeout)
	case timeout == 0:
		timeout = DefaultTimeout
	}

	rt, err := parseRoute(o)
	if err != nil {
		return nil, err
	}

	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, n, err := loadCAFile(o.CAFile)
		if err != nil {
			return nil, err
		}
		if errors.Is(pool.err, errNoSystemRoots) {
			logger.Warn("System CA roots unavailable; trusting only the CA file", "ca_file", o.CAFile, "error", pool.err)
		}
		tlsConf.RootCAs = pool.pool
		logger.Debug("Extra CA certificates loaded", "ca_file", o.CAFile, "certificates", n)
	}

	tr := &http.Transport{
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true, // a custom DialContext or TLS config would otherwise turn HTTP/2 off
		TLSHandshakeTimeout:   min(tlsHandshakeTimeout, timeout),
		ResponseHeaderTimeout: timeout, // never shorter than the overall cap the caller asked for
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       idleConnTimeout,
		MaxIdleConns:          maxIdleConns,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
	}
	rt.configure(tr, base, logger)

	if rt.mode == modeEnv && rt.envHTTPS == nil && rt.envHTTP != nil {
		logger.Warn("HTTP_PROXY is set but HTTPS_PROXY is not; HTTPS to Microsoft goes direct",
			"http_proxy", rt.envHTTP.Redacted())
	}
	logger.Info("HTTP client ready", "route", rt.describeWithCAs(o.CAFile), "timeout", timeout)
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Describe says in one line how NewClient(o) would reach Microsoft, e.g.
// "via HTTP proxy proxy.corp:3128 (user CORP\alice from [Proxy] Username and
// Password, for Negotiate, NTLM or Basic as the proxy asks)". It never shows
// a password. The environment is read now, as NewClient would.
func Describe(o Options) string {
	rt, err := parseRoute(o)
	if err != nil {
		return "invalid proxy setting: " + err.Error()
	}
	return rt.describeWithCAs(o.CAFile)
}

// describeWithCAs is describe plus the extra CA file, if any: Describe's line
// and the route NewClient logs.
func (rt route) describeWithCAs(caFile string) string {
	s := rt.describe()
	if caFile != "" {
		s += "; also trusting the CAs in " + caFile
	}
	return s
}

// CAPool returns the system roots plus the certificates of the PEM bundle at path,
// for every TLS client of presencebridge (Graph, SIP, CTI). Its errors say what is
// wrong with the file (not found, DER instead of PEM, a key instead of a certificate).
func CAPool(path string) (*x509.CertPool, error) {
	p, _, err := loadCAFile(path)
	if err != nil {
		return nil, err
	}
	return p.pool, nil
}

// caPool is the result of loadCAFile: the pool and a note when the system
// roots could not be loaded.
type caPool struct {
	pool *x509.CertPool
	err  error
}

var errNoSystemRoots = errors.New("system roots unavailable")

// loadCAFile reads a PEM bundle and returns the system roots plus its
// certificates, and how many it added.
func loadCAFile(path string) (caPool, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in our message
		}
		return caPool{}, 0, fmt.Errorf("read CA file %s: %w", path, err)
	}
	var certs []*x509.Certificate
	var other []string
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			other = append(other, block.Type)
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return caPool{}, 0, fmt.Errorf("CA file %s: certificate %d cannot be parsed: %v", path, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		hint := "it must contain -----BEGIN CERTIFICATE----- blocks; convert a DER (.cer/.crt binary) file with: openssl x509 -inform der -in ca.cer -out ca.pem"
		if len(other) > 0 {
			hint = fmt.Sprintf("found only %s blocks; it must contain the CA certificate (-----BEGIN CERTIFICATE-----)", strings.Join(other, ", "))
		}
		return caPool{}, 0, fmt.Errorf("CA file %s holds no PEM certificates (%s)", path, hint)
	}
	res := caPool{}
	res.pool, err = x509.SystemCertPool()
	if err != nil || res.pool == nil {
		res.err = fmt.Errorf("%w: %v", errNoSystemRoots, err)
		res.pool = x509.NewCertPool()
	}
	for _, c := range certs {
		res.pool.AddCert(c)
	}
	return res, len(certs), nil
}
