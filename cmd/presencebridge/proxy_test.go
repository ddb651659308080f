package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/testkit/squid"
)

// An engineer's path to an NTLM proxy: `config set` writes [Proxy] Username
// and the password (encrypted), and `presencebridge verify` reaches the
// simulated tenant of `presencebridge simulate` through a real Squid that
// asks for NTLM.
func TestIntegrationVerifyThroughNTLMProxy(t *testing.T) {
	squid.Require(t)
	const pass = "pr0xy p@ss:%é"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	s, err := squid.Start(ctx, squid.Options{NTLM: true})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	path := simTenant(t)
	out, err := exec.Command(binPath, "--config", path, "config", "set",
		"Proxy.URL="+s.URL, `Proxy.Username=CORP\svc-presence`, "Proxy.Password="+pass).CombinedOutput()
	if err != nil {
		t.Fatalf("config set: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "pr0xy") || !strings.Contains(string(raw), "\nPassword = enc:v1:") {
		t.Fatalf("Presence.ini after config set:\n%s", raw)
	}
	out, err = exec.Command(binPath, "--config", path, "verify").CombinedOutput()
	if err != nil {
		t.Fatalf("verify through the NTLM proxy: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "pr0xy") {
		t.Fatal("verify printed the proxy password")
	}
	want := "via HTTP proxy " + strings.TrimPrefix(s.URL, "http://") + ` (user CORP\svc-presence from [Proxy] Username and Password`
	if !strings.Contains(string(out), want) {
		t.Errorf("verify's output lacks %q:\n%s", want, out)
	}
	rs, err := s.WaitRequests(10*time.Second, func(rs []squid.Request) bool {
		return slices.ContainsFunc(rs, func(r squid.Request) bool { return r.Method == http.MethodConnect && r.Status == http.StatusOK })
	})
	if err != nil {
		t.Fatalf("%v: %+v", err, rs)
	}
	if users := squid.Users(rs, http.StatusOK); !slices.Equal(users, []string{`CORP\svc-presence`}) {
		t.Errorf("Squid's users with 200: %v, want [CORP\\svc-presence]", users)
	}
	for _, r := range rs {
		if r.Status == http.StatusOK && r.Scheme != "NTLM" {
			t.Errorf("a tunnel opened with %q, want NTLM: %+v", r.Scheme, r)
		}
	}
}
