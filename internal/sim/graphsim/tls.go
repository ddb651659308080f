package graphsim

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
)

// serverTLS is the in-memory PKI of one simulated tenant: a throwaway CA and a
// server certificate for the loopback names, signed by it. Nothing touches disk.
type serverTLS struct {
	caPEM []byte
	cert  tls.Certificate
	pool  *x509.CertPool
}

// newServerTLS creates a CA and a server certificate valid for 127.0.0.1, ::1 and
// localhost, for ten years (simulate, the demo and bench may run for long).
// pki's ECDSA P-256 keeps start-up fast (an RSA key would take far longer,
// especially under -race).
func newServerTLS(now time.Time) (*serverTLS, error) {
	notBefore, notAfter := now.Add(-time.Hour), now.Add(10*365*24*time.Hour)
	ca, err := pki.NewCA(pki.Options{CommonName: "presencebridge graphsim CA", Organization: "presencebridge simulated tenant",
		NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		return nil, fmt.Errorf("simulated tenant's CA: %w", err)
	}
	srv, err := ca.Issue(pki.Options{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		return nil, fmt.Errorf("simulated tenant's server certificate: %w", err)
	}
	return &serverTLS{caPEM: ca.CertPEM, cert: srv.TLS(), pool: ca.Pool()}, nil
}
