package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/platform/secret"
)

// The proxy password of these tests: a space, @, :, % and a non-ASCII letter.
const proxyPassword = "pr0xy p@ss:%é"

// What transport does with Proxy.URL: url.Parse decodes user and password once.
func proxyCreds(t *testing.T, c *Config) (user, pass string) {
	t.Helper()
	u, err := url.Parse(c.Proxy.URL)
	if err != nil {
		t.Fatalf("url.Parse(Proxy.URL): %v", err)
	}
	if u.User == nil {
		return "", ""
	}
	pass, _ = u.User.Password()
	return u.User.Username(), pass
}

func TestProxyURLDecodedOnce(t *testing.T) {
	for _, in := range []string{
		"http://proxyuser:pr0xy%20p%40ss%3A%25%C3%A9@proxy.example:3128", // all encoded
		"http://proxyuser:pr0xy p@ss:%25é@proxy.example:3128",            // literal space, @, :, é; only % encoded
		"http://proxy%75ser:pr0xy%20p%40ss:%25%c3%a9@proxy.example:3128", // the user decoded too; lower-case hex
	} {
		c := mustLoad(t, "[Proxy]\nURL = "+in+"\n"+minimal)
		if user, pass := proxyCreds(t, c); user != "proxyuser" || pass != proxyPassword {
			t.Errorf("URL = %s: user %q password %q, want proxyuser %q", redactRawURL(in), user, pass, proxyPassword)
		}
		if c.Proxy.URL != "http://proxyuser:pr0xy%20p%40ss%3A%25%C3%A9@proxy.example:3128" {
			t.Errorf("URL = %s loaded as %s", redactRawURL(in), redactRawURL(c.Proxy.URL))
		}
	}
	// The examples of Presence.ini.example and README.md.
	for in, want := range map[string]string{
		"http://proxyuser:pr0xy%20p@ss@proxy.example:3128":    "pr0xy p@ss",
		"http://proxyuser:pr0xy%20p@ss%25@proxy.example:3128": "pr0xy p@ss%",
	} {
		c := mustLoad(t, "[Proxy]\nURL = "+in+"\n"+minimal)
		if user, pass := proxyCreds(t, c); user != "proxyuser" || pass != want {
			t.Errorf("documented example %s: user %q, password right: %v", redactRawURL(in), user, pass == want)
		}
	}
	// A backslash is a plain character, as everywhere in the INI.
	c := mustLoad(t, "[Proxy]\nURL = http://CORP\\alice:pw@proxy.example:3128\n"+minimal)
	if user, _ := proxyCreds(t, c); user != `CORP\alice` {
		t.Errorf("user %q", user)
	}
}

func TestProxyURLBadPercent(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"http://proxyuser:50%off@proxy.example:3128", "the password holds a % that is not followed by two hex digits"},
		{"http://proxyuser:secret%@proxy.example:3128", "the password holds a % that is not followed by two hex digits"},
		{"http://proxyuser:secret%4@proxy.example:3128", "the password holds a % that is not followed by two hex digits"},
		{"http://proxy%user:pw@proxy.example:3128", "the user name holds a %"},
		{"http://proxyuser:caf%E9@proxy.example:3128", "not UTF-8 text after percent-decoding; encode a character such as é as its UTF-8 bytes, %C3%A9"},
		{"http://proxyuser:a%0Ab@proxy.example:3128", "not UTF-8 text after percent-decoding"},
	} {
		err := loadErr(t, "[Proxy]\nURL = "+tc.url+"\n"+minimal)
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "Presence.ini:2: [Proxy] URL = ") {
			t.Errorf("URL = %s: %s\nwant it to name the line and key and say %q", redactRawURL(tc.url), msg, tc.want)
		}
		if strings.Contains(tc.want, "two hex digits") && !strings.Contains(msg, "write a % itself as %25") {
			t.Errorf("URL = %s: %s\nwant the fix: write a %% itself as %%25", redactRawURL(tc.url), msg)
		}
		_, pw, _ := strings.Cut(strings.TrimPrefix(tc.url, "http://"), ":")
		pw, _, _ = strings.Cut(pw, "@")
		if strings.Contains(msg, pw) {
			t.Errorf("the error shows the password: %s", strings.ReplaceAll(msg, pw, "<PASSWORD>"))
		}
	}
}

func loadErr(t *testing.T, content string) error {
	t.Helper()
	_, err := Load(writeINI(t, t.TempDir(), []byte(content)))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load: err = %v, want a *config.Error", err)
	}
	return err
}

func TestProxyUsernamePassword(t *testing.T) {
	dir := t.TempDir()
	enc, err := secret.Encrypt(proxyPassword, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, password string
		warn           bool
	}{
		{"encrypted", enc, false},
		{"plain text", `"` + proxyPassword + `"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "Presence.ini")
			ini := "[Proxy]\nURL = http://proxy.example:3128\nUsername = CORP\\alice\nPassword = " + tc.password + "\n" + minimal
			if err := os.WriteFile(path, []byte(ini), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.Proxy.Username != `CORP\alice` || c.Proxy.Password.Reveal() != proxyPassword || c.Proxy.URL != "http://proxy.example:3128" {
				t.Errorf("Proxy = %q %q, password right: %v", c.Proxy.URL, c.Proxy.Username, c.Proxy.Password.Reveal() == proxyPassword)
			}
			warned := strings.Contains(strings.Join(c.Warnings, "\n"), "[Proxy] Password is plain text")
			if warned != tc.warn {
				t.Errorf("plain-text warning %v, want %v: %v", warned, tc.warn, c.Warnings)
			}
			var logs strings.Builder
			slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "proxy", c.Proxy, "config", c)
			js, _ := json.Marshal(c.Proxy)
			for _, out := range []string{c.Redacted(), c.Proxy.String(), fmt.Sprintf("%v %+v %#v", c.Proxy, c.Proxy, c.Proxy), logs.String(), string(js)} {
				if strings.Contains(out, "pr0xy") {
					t.Errorf("the password shows in %q", out)
				}
			}
			if r := c.Redacted(); !strings.Contains(r, "\nUsername = CORP\\alice\nPassword = ***\n") {
				t.Errorf("Redacted lacks the proxy user and a hidden password:\n%s", r)
			}
		})
	}
}

func TestProxyCredentialProblems(t *testing.T) {
	for _, tc := range []struct{ ini, want string }{
		{"[Proxy]\nURL = http://bob:pw@proxy.example:3128\nUsername = alice\nPassword = secret1\n",
			`Presence.ini:3: [Proxy] URL holds the user "bob" and [Proxy] Username or Password is set too; keep one of them`},
		{"[Proxy]\nURL = http://bob@proxy.example:3128\nPassword = secret1\n",
			`[Proxy] URL holds the user "bob" and [Proxy] Username or Password is set too`},
		{"[Proxy]\nUsername = alice\nPassword = secret1\n",
			"[Proxy] Username and Password are set, but [Proxy] URL is empty (HTTPS_PROXY from the environment); set URL = http://host:port"},
		{"[Proxy]\nURL = direct\nUsername = alice\n",
			"[Proxy] URL is direct (no proxy)"},
		{"[Proxy]\nURL = http://proxy.example:3128\nPassword = secret1\n",
			`Presence.ini:3: [Proxy] Password is set but Username is not; put the proxy user in Username (DOMAIN\user for NTLM)`},
		{"[Proxy]\nURL = http://proxy.example:3128\nUsername = al:ice\nPassword = secret1\n",
			`[Proxy] Username = "al:ice": a proxy user name cannot hold ':'`},
	} {
		err := loadErr(t, tc.ini+minimal)
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n%v\nwant %q", tc.ini, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret1") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// config set writes [Proxy] Password encrypted, like the other secrets.
func TestSetEncryptsProxyPassword(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal))
	if err := Set(path, []Setting{{"Proxy.URL", "http://proxy.example:3128"}, {"Proxy.Username", `CORP\alice`}, {"Proxy.Password", proxyPassword}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "pr0xy") || !strings.Contains(string(raw), "\nPassword = enc:v1:") {
		t.Fatalf("Presence.ini after config set:\n%s", raw)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.Password.Reveal() != proxyPassword || c.Proxy.Username != `CORP\alice` {
		t.Errorf("loaded user %q, password right: %v", c.Proxy.Username, c.Proxy.Password.Reveal() == proxyPassword)
	}
}
