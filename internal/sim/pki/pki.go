// Package pki mints the certificates of presencebridge's own loopback servers: a
// certificate authority made for one run and the server and client certificates
// it signs (the simulated tenant and the demo's Kamailio, both in the binary; the
// Squid harness; test servers and clients), and the self-signed certificate an
// admin would upload for an app. Keys are ECDSA P-256 (fast, even under -race)
// unless RSA is asked for. It does not import testing: graphsim and kamailio,
// which use it, ship in the service binary.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Options say what a certificate is for. The zero value of each field has a
// default, so a caller names only what its certificate needs.
type Options struct {
	// CommonName is the subject's CN. Required for a CA; for other certificates
	// it defaults to the first DNS name, else the first IP address.
	CommonName string
	// Organization is the subject's O, if any.
	Organization string
	// DNSNames and IPs are the names a server certificate covers (its
	// subjectAltName), taken as given: "127.0.0.1" in DNSNames stays a DNS name,
	// as a misissued certificate would have it. Ignored for a CA.
	DNSNames []string
	IPs      []net.IP
	// Client makes a certificate for TLS client authentication (mutual TLS, an
	// app's certificate credential) instead of a server certificate.
	Client bool
	// NotBefore and NotAfter bound the validity. NotBefore defaults to an hour
	// ago (a little clock skew), NotAfter to a day from now.
	NotBefore, NotAfter time.Time
	// RSA gives a 2048-bit RSA key instead of ECDSA P-256. Microsoft Entra's
	// certificate credentials take RSA only (MSAL's confidential.NewCredFromCert
	// signs its assertion with RS256/PS256).
	RSA bool
}

// KeyPair is a certificate and its private key, parsed and in PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // one CERTIFICATE block
	KeyPEM  []byte // one PKCS #8 PRIVATE KEY block, unencrypted
}

// TLS returns the pair for a tls.Config's Certificates.
func (k *KeyPair) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{k.Cert.Raw}, PrivateKey: k.Key, Leaf: k.Cert}
}

// WriteFiles writes the certificate (mode 0644: it is public) and the key (mode
// 0600) as PEM, for servers that read files (Kamailio, Squid) or a test's
// CertificateFile.
func (k *KeyPair) WriteFiles(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, k.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, k.KeyPEM, 0o600)
}

// CA is a certificate authority that signs certificates for one run. Clients
// trust it through CertPEM (a CAFile) or Pool.
type CA struct {
	KeyPair
}

// NewCA makes a CA named o.CommonName that signs end-entity certificates only
// (path length 0).
func NewCA(o Options) (*CA, error) {
	if o.CommonName == "" {
		return nil, errors.New("pki.NewCA: Options.CommonName is required (the CA's name, as clients show it)")
	}
	tmpl := template(o)
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.MaxPathLenZero = true, true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	tmpl.DNSNames, tmpl.IPAddresses = nil, nil
	kp, err := sign(tmpl, o.RSA, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("CA %q: %w", o.CommonName, err)
	}
	return &CA{KeyPair: *kp}, nil
}

// Pool returns a new pool that holds only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue makes a server (or, with o.Client, client) certificate signed by ca.
func (ca *CA) Issue(o Options) (*KeyPair, error) {
	kp, err := sign(leaf(o), o.RSA, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certificate %q from CA %q: %w", leafName(o), ca.Cert.Subject.CommonName, err)
	}
	return kp, nil
}

// SelfSigned makes a certificate signed by its own key, not a CA: what an admin
// makes with openssl for an app registration's certificate credential.
func SelfSigned(o Options) (*KeyPair, error) {
	kp, err := sign(leaf(o), o.RSA, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate %q: %w", leafName(o), err)
	}
	return kp, nil
}

// template is the subject and validity every certificate shares.
func template(o Options) *x509.Certificate {
	notBefore, notAfter := o.NotBefore, o.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	subject := pkix.Name{CommonName: o.CommonName}
	if o.Organization != "" {
		subject.Organization = []string{o.Organization}
	}
	return &x509.Certificate{Subject: subject, NotBefore: notBefore, NotAfter: notAfter}
}

// leaf is the template of an end-entity certificate.
func leaf(o Options) *x509.Certificate {
	tmpl := template(o)
	tmpl.Subject.CommonName = leafName(o)
	tmpl.DNSNames, tmpl.IPAddresses = o.DNSNames, o.IPs
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if o.RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment // RSA key exchange (TLS 1.2 without ECDHE)
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return tmpl
}

func leafName(o Options) string {
	switch {
	case o.CommonName != "":
		return o.CommonName
	case len(o.DNSNames) > 0:
		return o.DNSNames[0]
	case len(o.IPs) > 0:
		return o.IPs[0].String()
	}
	return ""
}

// sign makes a key and signs tmpl with parent and parentKey, or with the new key
// itself when parent is nil.
func sign(tmpl *x509.Certificate, useRSA bool, parent *x509.Certificate, parentKey crypto.Signer) (*KeyPair, error) {
	var key crypto.Signer
	var err error
	if useRSA {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	// tmpl.SerialNumber is nil: CreateCertificate draws a random one (RFC 5280
	// 4.1.2.2), so no two certificates of one CA, or of CAs with one name, share it.
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
