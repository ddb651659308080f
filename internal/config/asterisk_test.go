package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/asterisk"
	"github.com/presencebridge/presencebridge/internal/platform/secret"
)

func TestAsteriskDefaults(t *testing.T) {
	c := mustLoad(t, minimal)
	if !reflect.DeepEqual(c.Asterisk, asterisk.DefaultSettings()) {
		t.Errorf("Asterisk = %+v, want the package's defaults", c.Asterisk)
	}
	// The defaults as the issue states them, so a change of DefaultSettings
	// shows here and in Presence.ini.example.
	if a := c.Asterisk; a.Mode != "ari" || a.Device != "teams-{extension}" || a.Timeout != 5*time.Second || a.Concurrency != 8 || a.Enabled() {
		t.Errorf("Asterisk = %+v", a)
	}
}

func TestAsteriskSection(t *testing.T) {
	for _, c := range []struct {
		ini   string
		check func(Asterisk) bool
	}{
		{"URL = http://pbx.example.com:8088/ari\nUsername = pb\nPassword = pw", func(a Asterisk) bool {
			return a.Enabled() && a.Mode == "ari" && a.URL == "http://pbx.example.com:8088/ari" && a.Username == "pb" && a.Password == "pw"
		}},
		{"Mode = ARI\nURL = https://pbx.example.com:8089/asterisk/ari\nUsername = pb", func(a Asterisk) bool { return a.Enabled() && a.Mode == "ari" }},
		{"Mode = ami\nAddress = pbx.example.com\nUsername = pb\nSecret = s", func(a Asterisk) bool {
			return a.Enabled() && a.Address == "pbx.example.com:5038" && a.Secret == "s" && a.Prefix() == "Custom:"
		}},
		{"Mode = ami\nAddress = 10.0.0.2:15038\nUsername = pb", func(a Asterisk) bool { return a.Address == "10.0.0.2:15038" }},
		{"Device = teams-{UPN}", func(a Asterisk) bool { return a.Device == "teams-{UPN}" && !a.Enabled() }},
		{"Device = {user}", func(a Asterisk) bool { return a.Device == "{user}" }},
		{"Timeout = 250ms\nConcurrency = 1", func(a Asterisk) bool { return a.Timeout == 250*time.Millisecond && a.Concurrency == 1 }},
	} {
		cfg := mustLoad(t, minimal+"[Asterisk]\n"+c.ini+"\n")
		if !c.check(cfg.Asterisk) {
			t.Errorf("%q loaded as %+v", c.ini, cfg.Asterisk)
		}
	}
}

func TestAsteriskErrors(t *testing.T) {
	for ini, want := range map[string]string{
		"URL = http://pb:pw@pbx.example.com:8088/ari":     "do not put user:password@ in the URL; set [Asterisk] Username and Password",
		"URL = http://pbx.example.com:8088":               `no path: ARI is at /ari below http.conf's address, e.g. http://pbx.example.com:8088/ari`,
		"URL = http://pbx.example.com:8088/ari?api_key=x": "ARI's base takes no ?query",
		"URL = http://pbx.example.com:8088/ari":           "[Asterisk] Username is empty; set it to the ari.conf user presencebridge signs in as",
		"Username = pb\nPassword = pw":                    "[Asterisk] Username is set but URL is not, so nothing is sent to Asterisk; set URL = <ARI's base URL",
		"Mode = ami\nSecret = s":                          "[Asterisk] Secret is set but Address is not, so nothing is sent to Asterisk; set Address = <the manager interface's host:port",
		"Mode = ami\nAddress = pbx example":               "not a host name or address",
		"Device = teams-{extension":                       "a { without its }",
		"Device = teams":                                  "no field, so every user would get the same device",
	} {
		_, err := Load(writeINI(t, t.TempDir(), []byte(minimal+"[Asterisk]\n"+ini+"\n")))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", ini, err, want)
		}
	}
	raw, err := os.ReadFile("testdata/bad/asterisk.golden")
	if err != nil || strings.Contains(string(raw), "s3cret") {
		t.Errorf("the golden error text shows a secret (or is missing: %v)", err)
	}
}

// The effective configuration shows [Asterisk] without its secrets, and
// loads back to the same settings.
func TestAsteriskRedacted(t *testing.T) {
	c := mustLoad(t, minimal+"[Asterisk]\nMode = ami\nAddress = pbx.example.com:5038\nUsername = pb\nSecret = the-ami-secret\nDevice = t-{user}\n")
	r := c.Redacted()
	if strings.Contains(r, "the-ami-secret") || !strings.Contains(r, "[Asterisk]\nMode = ami\nURL =\nUsername = pb\nPassword =\nCAFile =\nAddress = pbx.example.com:5038\nSecret = ***\nDevice = t-{user}\nTimeout = 5s\nConcurrency = 8\n") {
		t.Errorf("Redacted:\n%s", r)
	}
	c = mustLoad(t, minimal+"[Asterisk]\nURL = http://pbx.example.com:8088/ari\nUsername = pb\nPassword = the-ari-password\n")
	if r := c.Redacted(); strings.Contains(r, "the-ari-password") || !strings.Contains(r, "Password = ***") {
		t.Errorf("Redacted:\n%s", r)
	}
}

// `config set` writes [Asterisk] Password and Secret encrypted.
func TestSetAsteriskSecrets(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal))
	if err := Set(path, []Setting{{"Asterisk.Mode", "ami"}, {"Asterisk.Address", "pbx.example.com"}, {"Asterisk.Username", "pb"},
		{"asterisk.secret", "the-ami-secret"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "the-ami-secret") || !strings.Contains(string(raw), "\n[Asterisk]\nMode = ami\nAddress = pbx.example.com\nUsername = pb\nSecret = "+secret.Prefix) {
		t.Errorf("written:\n%s", raw)
	}
	c, err := Load(path)
	if err != nil || c.Asterisk.Secret.Reveal() != "the-ami-secret" {
		t.Fatalf("loaded back: %v", err)
	}
	err = Set(path, []Setting{{"Asterisk.Password", "ari-pass"}})
	if err == nil || !strings.Contains(err.Error(), "[Asterisk] Password is for Mode = ari, but Mode is ami") || strings.Contains(err.Error(), "ari-pass") {
		t.Errorf("Set of an ARI password in AMI mode = %v", err)
	}
}
