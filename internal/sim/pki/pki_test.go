package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// handshake runs one TLS handshake over loopback TCP: a server with srv (and,
// if clientCAs is set, requiring a client certificate signed by them) and a
// client that trusts roots, asks for serverName and presents client if set. It
// returns the client's error, else the server's.
func handshake(t *testing.T, srv tls.Certificate, clientCAs *x509.CertPool, roots *x509.CertPool, serverName string, client *tls.Certificate) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	scfg := &tls.Config{Certificates: []tls.Certificate{srv}}
	if clientCAs != nil {
		scfg.ClientCAs, scfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, scfg)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			srvErr <- err
			return
		}
		_, err = io.WriteString(tc, "ok")
		srvErr <- err
	}()
	ccfg := &tls.Config{RootCAs: roots, ServerName: serverName}
	if client != nil {
		ccfg.Certificates = []tls.Certificate{*client}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), ccfg)
	if err != nil {
		<-srvErr
		return err
	}
	defer conn.Close()
	// With TLS 1.3 the server checks the client's certificate after the
	// client's handshake ends: read, so that a refusal shows here.
	buf := make([]byte, 2)
	_, rerr := io.ReadFull(conn, buf)
	if err := <-srvErr; err != nil {
		return err
	}
	return rerr
}

// A server certificate from a CA is trusted by a client that trusts the CA, for
// the names and addresses it covers and for no other, as its PEM files too.
func TestServerCertificateOverTLS(t *testing.T) {
	ca := testkit.NewCA(t, pki.Options{CommonName: "test CA", Organization: "presencebridge tests"})
	srv := testkit.Issue(t, ca, pki.Options{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	if srv.Cert.Subject.CommonName != "localhost" || srv.Cert.Issuer.String() != "CN=test CA,O=presencebridge tests" {
		t.Errorf("subject %q, issuer %q", srv.Cert.Subject, srv.Cert.Issuer)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := handshake(t, srv.TLS(), nil, ca.Pool(), name, nil); err != nil {
			t.Errorf("handshake for %s: %v", name, err)
		}
	}
	if err := handshake(t, srv.TLS(), nil, ca.Pool(), "pbx.example", nil); err == nil || !strings.Contains(err.Error(), "pbx.example") {
		t.Errorf("a name the certificate does not cover: err = %v", err)
	}
	other := testkit.NewCA(t, pki.Options{CommonName: "test CA"}) // same name, other key
	if err := handshake(t, srv.TLS(), nil, other.Pool(), "localhost", nil); !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Errorf("a client trusting another CA of the same name: err = %v, want unknown authority", err)
	}

	// The PEM files a server such as Kamailio reads load back into the same pair.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := srv.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	loaded, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM) {
		t.Fatal("the CA's PEM holds no certificate")
	}
	if err := handshake(t, loaded, nil, pool, "localhost", nil); err != nil {
		t.Errorf("handshake with the pair read from PEM files and the CA from its PEM: %v", err)
	}
}

// A client certificate from a CA gets through a server that requires one signed
// by that CA; a server certificate does not pass as a client one.
func TestClientCertificateOverTLS(t *testing.T) {
	serverCA := testkit.NewCA(t, pki.Options{CommonName: "server CA"})
	srv := testkit.Issue(t, serverCA, pki.Options{DNSNames: []string{"localhost"}})
	clientCA := testkit.NewCA(t, pki.Options{CommonName: "client CA"})
	client := testkit.Issue(t, clientCA, pki.Options{CommonName: "presencebridge", Client: true})
	if client.Cert.Subject.CommonName != "presencebridge" || len(client.Cert.DNSNames) != 0 {
		t.Errorf("client certificate subject %q, names %v", client.Cert.Subject, client.Cert.DNSNames)
	}
	c := client.TLS()
	if err := handshake(t, srv.TLS(), clientCA.Pool(), serverCA.Pool(), "localhost", &c); err != nil {
		t.Errorf("with the client certificate: %v", err)
	}
	if err := handshake(t, srv.TLS(), clientCA.Pool(), serverCA.Pool(), "localhost", nil); err == nil {
		t.Error("a server requiring a client certificate accepted none")
	}
	notClient := testkit.Issue(t, clientCA, pki.Options{DNSNames: []string{"localhost"}}).TLS()
	if err := handshake(t, srv.TLS(), clientCA.Pool(), serverCA.Pool(), "localhost", &notClient); err == nil {
		t.Error("a server certificate was accepted as a client certificate")
	}
}

// Each kind of certificate has the key, constraints and usages it is made for.
func TestProperties(t *testing.T) {
	ca := testkit.NewCA(t, pki.Options{CommonName: "props CA", NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)})
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v, key usage %b", ca.Cert.IsCA, ca.Cert.MaxPathLenZero, ca.Cert.KeyUsage)
	}
	if years := time.Until(ca.Cert.NotAfter).Hours() / 24 / 365; years < 9.9 {
		t.Errorf("CA valid for %.1f years, want the 10 asked for", years)
	}
	if k, ok := ca.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", ca.Key)
	}
	srv := testkit.Issue(t, ca, pki.Options{DNSNames: []string{"127.0.0.1"}})
	if srv.Cert.IsCA || len(srv.Cert.IPAddresses) != 0 || srv.Cert.DNSNames[0] != "127.0.0.1" ||
		len(srv.Cert.ExtKeyUsage) != 1 || srv.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server certificate: IsCA %v, IPs %v, DNS names %v, ext key usage %v; want an IP address kept as a DNS name",
			srv.Cert.IsCA, srv.Cert.IPAddresses, srv.Cert.DNSNames, srv.Cert.ExtKeyUsage)
	}
	if time.Until(srv.Cert.NotBefore) > -50*time.Minute || time.Until(srv.Cert.NotAfter) < 23*time.Hour {
		t.Errorf("default validity %v to %v, want an hour ago to a day from now", srv.Cert.NotBefore, srv.Cert.NotAfter)
	}
	if srv.Cert.SerialNumber.Cmp(testkit.Issue(t, ca, pki.Options{DNSNames: []string{"127.0.0.1"}}).Cert.SerialNumber) == 0 {
		t.Error("two certificates of one CA share a serial number")
	}

	// An app's certificate credential (pki.SelfSigned): self-signed, RSA (MSAL
	// signs with RS256/PS256).
	app := testkit.AppCertificate(t, "presencebridge")
	if k, ok := app.Key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Errorf("app key %T, want RSA 2048", app.Key)
	}
	if err := app.Cert.CheckSignature(app.Cert.SignatureAlgorithm, app.Cert.RawTBSCertificate, app.Cert.Signature); app.Cert.IsCA || app.Cert.Issuer.CommonName != "presencebridge" || err != nil {
		t.Errorf("self-signed: IsCA %v, issuer %q, own signature %v", app.Cert.IsCA, app.Cert.Issuer, err)
	}
	if _, err := tls.X509KeyPair(app.CertPEM, app.KeyPEM); err != nil {
		t.Errorf("the PEM pair does not load: %v", err)
	}

	// An expired certificate fails verification with the time it ended.
	old := testkit.Issue(t, ca, pki.Options{DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	var inv x509.CertificateInvalidError
	if _, err := old.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Errorf("expired certificate: err = %v, want x509.Expired", err)
	}

	if _, err := pki.NewCA(pki.Options{}); err == nil || !strings.Contains(err.Error(), "CommonName is required") {
		t.Errorf("a CA without a name: err = %v", err)
	}
}

// BenchmarkIssue measures minting one server certificate (a key and a
// signature), what each test server and each simulated tenant's start pays.
func BenchmarkIssue(b *testing.B) {
	ca, err := pki.NewCA(pki.Options{CommonName: "bench CA"})
	if err != nil {
		b.Fatal(err)
	}
	for _, rsaKey := range []bool{false, true} {
		name := "ECDSA-P256"
		if rsaKey {
			name = "RSA-2048"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := ca.Issue(pki.Options{DNSNames: []string{"localhost"}, RSA: rsaKey}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
