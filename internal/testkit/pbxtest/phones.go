package pbxtest

import (
	"context"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/sipua"
)

// Phones registers a sipua phone for each extension with the PBX at server (UDP
// host:port), as sip:<ext>@domain with passwords[ext] (none when absent), and
// closes them when the test ends.
func Phones(t testing.TB, server, domain string, passwords map[string]string, exts ...string) map[string]*sipua.Phone {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]*sipua.Phone{}
	for _, ext := range exts {
		p, err := sipua.New(ctx, sipua.Options{Server: server, User: ext, Domain: domain, Password: passwords[ext]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := p.Register(ctx); err != nil {
			t.Fatalf("register %s with %s: %v", ext, server, err)
		}
		out[ext] = p
	}
	return out
}
