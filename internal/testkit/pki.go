package testkit

import (
	"testing"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
)

// NewCA returns a CA made for one test (pki.NewCA), or ends t.
func NewCA(t testing.TB, o pki.Options) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(o)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Issue returns a certificate signed by ca (pki.CA.Issue), or ends t.
func Issue(t testing.TB, ca *pki.CA, o pki.Options) *pki.KeyPair {
	t.Helper()
	kp, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// AppCertificate returns what an admin makes with openssl and uploads to an app
// registration as its certificate credential: self-signed, RSA (Entra and MSAL's
// confidential.NewCredFromCert take RSA only), named name. It ends t on an error.
func AppCertificate(t testing.TB, name string) *pki.KeyPair {
	t.Helper()
	kp, err := pki.SelfSigned(pki.Options{CommonName: name, Client: true, RSA: true})
	if err != nil {
		t.Fatal(err)
	}
	return kp
}
