package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
	"github.com/presencebridge/presencebridge/internal/presence"
)

func TestDeliverySections(t *testing.T) {
	c := mustLoad(t, minimal+`
[SIP]
Server = sip:pbx.example.com
Transport = TLS
OutboundProxy = <sip:10.0.0.5:5070;lr>
From = sip:presencebridge@pbx.example.com
Username = pb
Password = "s3cret;#x"
Expires = 30m
Rate = 200
[HTTP]
URL = https://cti.example.com/presence
Header.Authorization = Bearer tok-123
header.X-Tenant = contoso
Batch = 1
[Delivery]
StaleAfter = off
RetryMax = 2m
[Mapping]
busy/inacall = talking | open | on-the-phone | Telefoniert
Away/* = away | closed | - |
`)
	if c.SIP.Server != "pbx.example.com:5061" || c.SIP.Transport != "tls" || c.SIP.OutboundProxy != "10.0.0.5:5070" {
		t.Errorf("SIP = %+v", c.SIP)
	}
	if c.SIP.Password.Reveal() != "s3cret;#x" || c.SIP.Expires != 30*time.Minute || c.SIP.Rate != 200 || c.SIP.Concurrency != sip.DefaultSettings().Concurrency {
		t.Errorf("SIP = %+v", c.SIP)
	}
	if c.HTTP.URL != "https://cti.example.com/presence" || !c.HTTP.Batch || c.HTTP.Headers["Authorization"].Reveal() != "Bearer tok-123" || c.HTTP.Headers["X-Tenant"].Reveal() != "contoso" {
		t.Errorf("HTTP = %+v", c.HTTP)
	}
	if c.Delivery.StaleAfter != 0 || c.Delivery.RetryMax != 2*time.Minute || c.Delivery.RetryMin != delivery.DefaultSettings().RetryMin {
		t.Errorf("Delivery = %+v", c.Delivery)
	}
	if got := c.Mapping.Map(presence.State{Availability: presence.Busy, Activity: presence.ActInACall}); got.State != "talking" || got.Note != "Telefoniert" {
		t.Errorf("Busy/InACall maps to %q", got)
	}
	if got := c.Mapping.Map(presence.State{Availability: presence.Busy, Activity: presence.ActInAMeeting}); got.Activity != "meeting" {
		t.Errorf("an untouched default changed: %q", got)
	}
	red := c.Redacted()
	for _, secret := range []string{"s3cret", "tok-123"} {
		if strings.Contains(red, secret) {
			t.Errorf("Redacted shows %q:\n%s", secret, red)
		}
	}
	for _, want := range []string{"Header.Authorization = ***", "Busy/InACall = talking | open | on-the-phone | Telefoniert", "Away/* = away | closed | - |", "StaleAfter = off"} {
		if !strings.Contains(red, want) {
			t.Errorf("Redacted lacks %q:\n%s", want, red)
		}
	}
	if strings.Contains(red, "Busy/InAMeeting") {
		t.Errorf("Redacted lists a default mapping rule:\n%s", red)
	}
}

func TestDeliveryErrors(t *testing.T) {
	_, err := Load(writeINI(t, t.TempDir(), []byte(minimal+`[SIP]
Transport = ucp
Server = pbx:99999
Password = hunter2
[HTTP]
URL = https://user:pw@cti.example.com/x
Header.Bad Name = 1
[Mapping]
Busy/InCall = oncall | open | on-the-phone | In a call
Away/* = away | ajar | - | x
[Delivery]
RetryMin = 10s
RetryMax = 5s
`)))
	if err == nil {
		t.Fatal("Load accepted a broken file")
	}
	msg := err.Error()
	for _, want := range []string{
		`Presence.ini:5: [SIP] Transport = "ucp": unknown transport (did you mean udp?); use udp, tcp or tls`,
		`Presence.ini:6: [SIP] Server = "pbx:99999": port "99999" is not a number from 1 to 65535`,
		`Presence.ini:7: [SIP] Password is set but Username is not`,
		`Presence.ini:9: [HTTP] URL: do not put user:password@ in the URL`,
		`Presence.ini:10: [HTTP] Header.Bad Name: not a header name`,
		`Presence.ini:12: [Mapping] Busy/InCall = "oncall | open | on-the-phone | In a call": "InCall" is not a Teams activity`,
		`Presence.ini:13: [Mapping] Away/* = "away | ajar | - | x": the basic status "ajar" must be open or closed`,
		`Presence.ini:16: [Delivery] RetryMax (5s) is shorter than RetryMin (10s)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	for _, secret := range []string{"hunter2", "pw@"} {
		if strings.Contains(msg, secret) {
			t.Errorf("errors show the secret %q:\n%s", secret, msg)
		}
	}
}

// The example lists every default mapping rule, commented out, exactly as the code has it.
// The CTI target trusts config for these: cti.New no longer checks them.
func TestHTTPURLAndClientCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "client.pem"), []byte("not read by Load"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(writeINI(t, dir, []byte(minimal+`[HTTP]
URL = cti.example.com/presence
ClientCertFile = client.pem
`)))
	if err == nil {
		t.Fatal("Load accepted a broken [HTTP]")
	}
	for _, want := range []string{
		`Presence.ini:5: [HTTP] URL = "cti.example.com/presence": not a URL; use e.g. https://cti.example.com/presence`,
		`[HTTP]: ClientCertFile and ClientKeyFile go together; set both or neither`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%s", want, err)
		}
	}
}

func TestExampleListsDefaultMapping(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "Presence.ini.example"))
	if err != nil {
		t.Fatal(err)
	}
	m := presence.DefaultMapping()
	for _, k := range presence.DefaultMappingKeys() {
		r, _ := m.Rule(k)
		if line := ";" + k + " = " + r.String() + "\n"; !strings.Contains(string(raw), line) {
			t.Errorf("Presence.ini.example lacks the default rule line %q", line)
		}
	}
}

func TestCloud(t *testing.T) {
	cases := []struct{ ini, login, graph string }{
		{"", "https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0"},
		{"[Microsoft]\nCloud = USGov\n", "https://login.microsoftonline.us", "https://graph.microsoft.us/v1.0"},
		{"[Microsoft]\nCloud = dod\n", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us/v1.0"},
		{"[Microsoft]\nCloud = china\nGraphURL = https://graph.example.cn/v1.0\n", "https://login.chinacloudapi.cn", "https://graph.example.cn/v1.0"},
	}
	for _, c := range cases {
		cfg := mustLoad(t, c.ini+minimal)
		if cfg.Microsoft.LoginURL != c.login || cfg.Microsoft.GraphURL != c.graph || cfg.Accounts[0].GraphURL != c.graph || cfg.Accounts[0].LoginURL != c.login {
			t.Errorf("%q: login %s graph %s (account %s %s), want %s %s", c.ini, cfg.Microsoft.LoginURL, cfg.Microsoft.GraphURL,
				cfg.Accounts[0].LoginURL, cfg.Accounts[0].GraphURL, c.login, c.graph)
		}
	}
	_, err := Load(writeINI(t, t.TempDir(), []byte("[Microsoft]\nCloud = usgovt\n"+minimal)))
	if err == nil || !strings.Contains(err.Error(), `Presence.ini:2: [Microsoft] Cloud = "usgovt": unknown cloud (did you mean usgov?)`) {
		t.Errorf("err = %v", err)
	}
}

// Secrets may be stored encrypted; a plain one is accepted with a warning.
func TestEncryptedSecrets(t *testing.T) {
	dir := t.TempDir()
	enc, err := secret.Encrypt("s3cret-value", dir)
	if err != nil {
		t.Fatal(err)
	}
	ini := "[Account.main]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\nAuth = secret\nClientSecret = " + enc +
		"\n[SIP]\nServer = pbx:5060\nUsername = pb\nPassword = plain-pw\n"
	c, err := Load(writeINI(t, dir, []byte(ini)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Accounts[0].ClientSecret.Reveal() != "s3cret-value" || c.SIP.Password.Reveal() != "plain-pw" {
		t.Errorf("secrets = %q, %q", c.Accounts[0].ClientSecret.Reveal(), c.SIP.Password.Reveal())
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "Presence.ini:9: [SIP] Password is plain text") || strings.Contains(c.Warnings[0], "plain-pw") {
		t.Errorf("warnings = %q", c.Warnings)
	}
	// Encrypted on another machine (another key file): refused with the fix.
	_, err = Load(writeINI(t, t.TempDir(), []byte(ini)))
	if err == nil || !strings.Contains(err.Error(), "Presence.ini:5: [Account.main] ClientSecret: cannot decrypt") || !strings.Contains(err.Error(), "secret encrypt") {
		t.Errorf("err = %v", err)
	}
}

// An API key in the CTI URL's query stays out of the printed configuration
// (verify shows it), as it stays out of the CTI target's errors.
func TestRedactedDropsTheCTIQuery(t *testing.T) {
	c := mustLoad(t, minimal+"[HTTP]\nURL = https://cti.example.com/presence?apikey=k3y-s3cret\n")
	if red := c.Redacted(); strings.Contains(red, "k3y-s3cret") || !strings.Contains(red, "URL = https://cti.example.com/presence\n") {
		t.Errorf("Redacted:\n%s", red)
	}
}

func TestRedactedShowsReassertAndProbe(t *testing.T) {
	for ini, want := range map[string]string{
		minimal: "StaleAfter = 5m\nReassertRate = 200\nProbeInterval = 30s\n",
		minimal + "[Delivery]\nReassertRate = off\nProbeInterval = 0\n": "ReassertRate = 0\nProbeInterval = off\n",
	} {
		if red := mustLoad(t, ini).Redacted(); !strings.Contains(red, want) {
			t.Errorf("Redacted lacks %q:\n%s", want, red)
		}
	}
}
