package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/users"
)

// TestSecretsNeverPrinted: however a Config is printed, the client secret and the
// proxy password do not show.
func TestSecretsNeverPrinted(t *testing.T) {
	const secret, proxyPass = "Xy7Q~TopSecretClientValue", "Pr0xyPa55"
	c := mustLoad(t, "[Proxy]\nURL = http://bob:"+proxyPass+"@proxy.example:8080\n"+minimal+
		"Auth = secret\nClientSecret = "+secret+"\n")
	if c.Accounts[0].ClientSecret.Reveal() != secret {
		t.Fatalf("Reveal = %q", c.Accounts[0].ClientSecret.Reveal())
	}

	var outputs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		outputs = append(outputs, fmt.Sprintf(f, c), fmt.Sprintf(f, *c), fmt.Sprintf(f, c.Accounts[0]), fmt.Sprintf(f, c.Proxy))
	}
	for _, v := range []any{c, c.Accounts, c.Proxy} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, string(b))
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("cfg", "config", c, "account", c.Accounts[0], "secret", c.Accounts[0].ClientSecret, "proxy", c.Proxy)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "config", c, "account", c.Accounts[0], "secret", c.Accounts[0].ClientSecret, "proxy", c.Proxy)
	outputs = append(outputs, logs.String(), c.Redacted(), c.Proxy.String())

	for _, out := range outputs {
		for _, s := range []string{secret, proxyPass, "TopSecret"} {
			if strings.Contains(out, s) {
				t.Errorf("output holds %q: %s", s, out)
			}
		}
	}
	if !strings.Contains(c.Redacted(), "ClientSecret = ***") || !strings.Contains(c.Redacted(), "http://bob:***@proxy.example:8080") {
		t.Errorf("Redacted does not show the redacted values:\n%s", c.Redacted())
	}
	if got := fmt.Sprintf("%v|%s|%v", Secret(""), Secret(""), Secret("x")); got != "||***" {
		t.Errorf("empty/non-empty secret print as %q", got)
	}
}

func TestAccountFor(t *testing.T) {
	c := mustLoad(t, `
[Account.main]
TenantID = contoso.onmicrosoft.com
ClientID = 11111111-2222-3333-4444-555555555555
[Account.EU]
TenantID = contoso.onmicrosoft.com
ClientID = 22222222-2222-3333-4444-555555555555
Domains = contoso.de, contoso.fr
`)
	cases := []struct {
		name   string
		user   users.User
		want   string // account id, or "" for an error
		errHas string
	}{
		{"domain match", users.User{UPN: "a@contoso.de"}, "EU", ""},
		{"catch-all", users.User{UPN: "a@contoso.com"}, "main", ""},
		{"explicit wins over domain", users.User{UPN: "a@contoso.de", Account: "main"}, "main", ""},
		{"explicit ignores case", users.User{UPN: "a@contoso.com", Account: "eu"}, "EU", ""},
		{"unknown explicit", users.User{UPN: "a@contoso.com", Account: "us", Line: 7}, "", `user "a@contoso.com" (users file line 7): Account "us" is not in Presence.ini; use one of [Account.main], [Account.EU]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := c.AccountFor(tc.user)
			if tc.want != "" {
				if err != nil || a.ID != tc.want {
					t.Fatalf("got %v, %v; want %s", a, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.errHas)
			}
		})
	}

	// Without a catch-all account, an unclaimed domain is an error naming the fix.
	onlyDomains := &Config{Accounts: []Account{{ID: "eu", Domains: []string{"contoso.de"}}}}
	_, err := onlyDomains.AccountFor(users.User{UPN: "b@fabrikam.com", Line: 3})
	if err == nil || !strings.Contains(err.Error(), `user "b@fabrikam.com" (users file line 3): no account serves domain "fabrikam.com"; add fabrikam.com to Domains`) {
		t.Errorf("err = %v", err)
	}
	// Two catch-alls (two app registrations splitting one domain): the users file must choose.
	twoCatchAll := &Config{Accounts: []Account{{ID: "a"}, {ID: "b"}}}
	if _, err := twoCatchAll.AccountFor(users.User{UPN: "c@contoso.com"}); err == nil || !strings.Contains(err.Error(), "[Account.a] and [Account.b] all serve every domain") {
		t.Errorf("err = %v", err)
	}
	if a, err := twoCatchAll.AccountFor(users.User{UPN: "c@contoso.com", Account: "B"}); err != nil || a.ID != "b" {
		t.Errorf("explicit account with two catch-alls: %v, %v", a, err)
	}
	if _, err := (&Config{}).AccountFor(users.User{UPN: "c@contoso.com"}); err == nil {
		t.Error("no accounts: want an error")
	}
	if a, ok := c.Account("MAIN"); !ok || a.ID != "main" {
		t.Errorf("Account(MAIN) = %v, %v", a, ok)
	}
	if _, ok := c.Account("nope"); ok {
		t.Error("Account(nope) found")
	}
}
