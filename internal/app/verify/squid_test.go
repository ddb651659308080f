package verify

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/sim/graphsim"
	"github.com/presencebridge/presencebridge/internal/testkit/squid"
)

// The product's path through a real Squid: Presence.ini with the proxy keys,
// config.Load, transport.NewClient, and every request of verify (sign-in,
// token, Graph) to the simulated tenant through the proxy.
func TestIntegrationVerifyThroughSquid(t *testing.T) {
	squid.Require(t)
	const pass = "pr0xy p@ss:%é" // a space, @, :, % and a non-ASCII letter
	tn := newTenant(t, []graphsim.App{{ClientID: "presencebridge-daemon", Secret: "sim-secret", Roles: readAll}})
	encPass, err := secret.Encrypt(pass, tn.dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		proxy    squid.Options
		keys     string // [Proxy] keys after URL = <squid>
		userinfo string // before the proxy's host:port in URL
		wantUser string // as Squid logs it
		describe string
		hosts    bool // the tenant's URLs name localhost (Squid mints inspection certificates for names)
	}{
		{
			name:     "Basic, password in the URL, partly percent-encoded",
			proxy:    squid.Options{Basic: map[string]string{"proxyuser": pass}},
			userinfo: "proxyuser:pr0xy%20p@ss:%25é@",
			wantUser: "proxyuser",
			describe: "(user proxyuser from [Proxy] URL, for Negotiate, NTLM or Basic as the proxy asks)",
		},
		{
			name:     "Basic, encrypted Username and Password",
			proxy:    squid.Options{Basic: map[string]string{"proxyuser": pass}},
			keys:     "Username = proxyuser\nPassword = " + encPass + "\n",
			wantUser: "proxyuser",
			describe: "(user proxyuser from [Proxy] Username and Password",
		},
		{
			name:     "NTLM",
			proxy:    squid.Options{NTLM: true},
			keys:     "Username = CORP\\svc-presence\nPassword = " + encPass + "\n",
			wantUser: `CORP\svc-presence`,
			describe: `(user CORP\svc-presence from [Proxy] Username and Password`,
		},
		{
			name:     "TLS inspection",
			proxy:    squid.Options{Bump: true, UpstreamCAFile: filepath.Join(tn.dir, "sim-ca.pem")},
			describe: "(no auth); also trusting the CAs in ",
			hosts:    true,
		},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			s, err := squid.Start(ctx, tt.proxy)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop()
			ini := strings.Replace(tn.ini(""), "URL = direct\n", "URL = http://"+tt.userinfo+strings.TrimPrefix(s.URL, "http://")+"\n"+tt.keys, 1)
			if tt.proxy.Bump {
				ini = strings.Replace(ini, "CAFile = sim-ca.pem", "CAFile = "+s.CAFile, 1)
				ini = strings.ReplaceAll(ini, "https://127.0.0.1:", "https://localhost:")
			}
			rs := tn.verify(t, ini)
			for _, r := range rs {
				if r.Status != Pass {
					t.Errorf("%s: %s %s (fix: %s)", r.Check, r.Status, r.Detail, r.Fix)
				}
				if strings.Contains(r.Detail+r.Fix, "pr0xy") {
					t.Errorf("%s shows the proxy password", r.Check)
				}
			}
			if d := find(t, rs, "sign-in host").Detail; !strings.Contains(d, "via HTTP proxy "+strings.TrimPrefix(s.URL, "http://")+" "+tt.describe) {
				t.Errorf("sign-in host detail %q, want the route %q", d, tt.describe)
			}
			// Squid logs a tunnel when it closes; verify's client is gone by now.
			got, err := s.WaitRequests(10*time.Second, func(rs []squid.Request) bool {
				return slices.ContainsFunc(rs, func(r squid.Request) bool { return r.Method == http.MethodConnect && r.Status == http.StatusOK })
			})
			if err != nil {
				t.Fatalf("%v: %+v\n%s", err, got, s.LogTail(20))
			}
			if tt.wantUser != "" {
				if users := squid.Users(got, http.StatusOK); !slices.Equal(users, []string{tt.wantUser}) {
					t.Errorf("Squid's users with 200: %v, want [%s]", users, tt.wantUser)
				}
			}
			if tt.proxy.Bump && !slices.ContainsFunc(got, func(r squid.Request) bool {
				return r.Method == http.MethodPost && strings.Contains(r.URL, "/oauth2/v2.0/token")
			}) {
				t.Errorf("Squid did not see the token request inside the tunnel: %+v", got)
			}
		})
	}
}
