package squid

import (
	"path/filepath"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/pki"
)

// writeBumpCA makes the CA Squid signs its inspection certificates with:
// bump-ca.pem (what a client must trust, [Proxy] CAFile) and bump-ca.key.
func writeBumpCA(dir string) error {
	ca, err := pki.NewCA(pki.Options{CommonName: "presencebridge test inspection CA", Organization: "presencebridge squid harness",
		NotAfter: time.Now().Add(7 * 24 * time.Hour)})
	if err != nil {
		return err
	}
	return ca.WriteFiles(filepath.Join(dir, "bump-ca.pem"), filepath.Join(dir, "bump-ca.key"))
}
