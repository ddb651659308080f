package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/platform/textfile"
	"github.com/presencebridge/presencebridge/internal/teams/write"
)

// The fuzz targets load Presence.ini texts as a field engineer's editor leaves
// them. `make test` runs their seeds; `make fuzz` explores from them.

// fuzzSecret stands for a secret in the seeds. Wherever an input gives it as a
// secret (ClientSecret, [SIP] Password, an [HTTP] Header.*, the password of a
// [Proxy] or [HTTP] URL), it must not come back in an error, a warning or the
// effective configuration.
const fuzzSecret = "s3cr3tFuzzValue8c1d"

// fuzzINIs are real-looking files: the shipped example, the bad configs of the
// golden tests, and what field trials sent in.
func fuzzINIs(f *testing.F) [][]byte {
	var out [][]byte
	paths, _ := filepath.Glob("testdata/bad/*.ini")
	for _, p := range append(paths, "../../Presence.ini.example") {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	secrets := "[Proxy]\nURL = http://bob:" + fuzzSecret + "@proxy.example:8080\n" +
		"[Account.main]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\nAuth = secret\nClientSecret = " + fuzzSecret + "\n" +
		"[Account.other]\nTenantID = fabrikam.onmicrosoft.com\nClientID = 21111111-2222-3333-4444-555555555555\nAuth = devicecode\nClientSecret = " + fuzzSecret + "\n" +
		"[SIP]\nServer = pbx.example\nUsername = pb\nPassword = " + fuzzSecret + "\n" +
		"[HTTP]\nURL = https://cti:" + fuzzSecret + "@cti.example/presence\nHeader.Authorization = Bearer " + fuzzSecret + "\nHeader.X Bad = " + fuzzSecret + "\n"
	crlf := strings.ReplaceAll(secrets, "\n", "\r\n")
	big := strings.Repeat("x", 1<<20)
	texts := []string{
		secrets,
		"\ufeff" + crlf,
		minimal + "ClientSecret = \"" + fuzzSecret + "\n",                          // unclosed quote
		minimal + "Auth = secret\nClientSecret = " + fuzzSecret + " ; the value\n", // inline comment
		minimal + "Auth = secret\nClientSecret = enc:v1:" + fuzzSecret + "\n",      // damaged encrypted value
		"[SIP]\nServer = pbx.example:99999\nPassword = " + fuzzSecret + "\n" + minimal,
		"[Proxy]\nURL = socks5://bob:" + fuzzSecret + "@proxy.example\n" + minimal,
		"[Proxy]\nURL = http://bob:" + fuzzSecret + " ;comment@proxy.example:8080\n" + minimal,
		// NaN and infinite numbers, as spreadsheets and scripts write them.
		"[Polling]\nBudgetShare = NaN\nResolveRate = NaN\n[SIP]\nRate = +Inf\n" + minimal,
		"[Polling]\nBudgetShare = -Inf%\nResolveRate = 1e309\nInterval = NaNs\n[SIP]\nRate = nan\n" + minimal,
		"[Polling]\nBudgetRequests = 99999999999999999999\nInterval = 9999999999h\n[Delivery]\nRetryMax = -1s\n" + minimal,
		// [PBX]: rates and durations at and past their bounds, pairs setPresence refuses.
		"[SIP]\nServer = pbx.example\n[PBX]\nWatch = both\nSubscribeRate = NaN\nSubscribeExpires = 24h0m1s\nTeamsExpiration = PT5M\nInCall = Busy/InAMeeting\nListen = [::]:0\n" + minimal,
		"[SIP]\nServer = pbx.example\n[PBX]\nWatch = dialog\nSubscribeRate = 1e-300\nSubscribeExpires = 1m\nTeamsExpiration = 4h\nRinging = available, available\nListen = [fe80::1%eth0]:5070\n" + minimal,
		"[PBX]\nWatch = presence\nSubscribeRate = 1e309\nDND = off\nAway = Away,Away\n" + minimal,
		// 1 MB and 64 KB values, a 16 KB unknown key and section (a pasted log,
		// a broken copy). Bigger ones cost seconds: a refused value is quoted
		// whole in its error, and an unknown name is compared with every known one.
		"[Mapping]\nBusy/InACall = " + big + "\n" + minimal,
		"[General]\nLogLevel = " + big[:64<<10] + "\n" + minimal,
		"[General]\n" + big[:16<<10] + " = 1\n" + minimal,
		"[" + big[:16<<10] + "]\n" + minimal,
		minimal + "\x00",
		"",
	}
	for _, s := range texts {
		out = append(out, []byte(s))
	}
	out = append(out, utf16Bytes(crlf, false), utf16Bytes(secrets, true),
		bytes.ReplaceAll([]byte(crlf), []byte("bob"), []byte{'b', 0xF6, 'b'})) // Windows-1252
	return out
}

// FuzzLoad loads any text as Presence.ini: it never hangs or panics, gives the
// same answer twice, names the file and line in every problem, keeps what was
// given as a secret out of what it says, and what it accepts is in range.
func FuzzLoad(f *testing.F) {
	for _, b := range fuzzINIs(f) {
		f.Add(b)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "Presence.ini")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		cfg2, err2 := Load(path)
		if fmt.Sprint(err) != fmt.Sprint(err2) || (cfg == nil) != (cfg2 == nil) || (cfg != nil && cfg.Redacted() != cfg2.Redacted()) {
			t.Fatalf("two loads of the same file differ:\n%v\n%v", err, err2)
		}
		text, _, _ := textfile.Decode(data)
		lines := strings.Count(text, "\n") + 1
		secretGiven := givenOnlyAsSecret(text)

		if err != nil {
			checkLoadError(t, err, path, lines)
			if secretGiven && strings.Contains(err.Error(), fuzzSecret) {
				t.Fatalf("a secret is in the error:\n%v", err)
			}
			return
		}
		if secretGiven {
			js, _ := json.Marshal(cfg)
			for _, said := range []string{cfg.Redacted(), strings.Join(cfg.Warnings, "\n"), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), string(js)} {
				if strings.Contains(said, fuzzSecret) {
					t.Fatalf("a secret is in what the configuration says of itself:\n%s", said)
				}
			}
		}
		if problem := outOfRange(cfg); problem != "" {
			t.Fatalf("accepted a value out of range: %s", problem)
		}
	})
}

// checkLoadError: a *Error has one line per problem, each "Presence.ini:N: " (or
// "Presence.ini: " for the file as a whole) with N a line of the file; any other
// error names the file's path.
func checkLoadError(t *testing.T, err error, path string, lines int) {
	t.Helper()
	var cerr *Error
	if !errors.As(err, &cerr) {
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("error %.300q does not name the file %s", err, path)
		}
		return
	}
	if len(cerr.Problems) == 0 {
		t.Fatal("a *config.Error without problems")
	}
	msg := err.Error()
	if n := strings.Count(msg, "\n") + 1; n != len(cerr.Problems) {
		t.Fatalf("%d problems but %d lines of error text:\n%.2000s", len(cerr.Problems), n, msg)
	}
	for _, p := range cerr.Problems {
		if p.Line < 0 || p.Line > lines {
			t.Fatalf("problem on line %d of a %d-line file: %.300s", p.Line, lines, p.Message)
		}
		if p.Message == "" {
			t.Fatalf("problem on line %d says nothing", p.Line)
		}
	}
	for _, l := range strings.Split(msg, "\n") {
		if !strings.HasPrefix(l, "Presence.ini:") {
			t.Fatalf("error line %.300q does not start with the file name", l)
		}
	}
}

// givenOnlyAsSecret reports whether fuzzSecret occurs in text, and only as (part
// of) the value of a secret: ClientSecret in an [Account.*], Password in [SIP], a
// Header.* in [HTTP], or the password of a [Proxy] or [HTTP] URL. Anywhere else
// (a key name, a comment, [Mapping]) it is not a secret and may be shown.
func givenOnlyAsSecret(text string) bool {
	if !strings.Contains(text, fuzzSecret) {
		return false
	}
	section := ""
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			if end := strings.IndexByte(t, ']'); end > 0 {
				section = strings.ToLower(strings.TrimSpace(t[1:end]))
			}
		}
		if !strings.Contains(line, fuzzSecret) {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || strings.Contains(key, fuzzSecret) || strings.Count(value, fuzzSecret) != 1 {
			return false
		}
		key = strings.ToLower(strings.TrimSpace(key))
		switch {
		case key == "clientsecret" && strings.HasPrefix(section, "account"):
		case key == "password" && section == "sip":
		case strings.HasPrefix(key, "header.") && section == "http":
		case key == "url" && (section == "proxy" || section == "http") && strings.Contains(value, ":"+fuzzSecret+"@"):
		default:
			return false
		}
	}
	return true
}

// outOfRange names a value of an accepted configuration outside what
// Presence.ini.example documents (a NaN or an infinity included), or "".
func outOfRange(c *Config) string {
	bad := func(what string, v any) string { return fmt.Sprintf("%s = %v", what, v) }
	p := c.Polling
	switch {
	case p.Interval != 0 && p.Interval < 1e9, p.MinInterval < 5e8:
		return bad("[Polling] Interval", p.Interval)
	case p.BudgetRequests < 1:
		return bad("[Polling] BudgetRequests", p.BudgetRequests)
	case p.BudgetWindow < 1e9:
		return bad("[Polling] BudgetWindow", p.BudgetWindow)
	case !(p.BudgetShare >= 0.01 && p.BudgetShare <= 0.90):
		return bad("[Polling] BudgetShare", p.BudgetShare)
	case p.RequestTimeout < 1e9:
		return bad("[Polling] RequestTimeout", p.RequestTimeout)
	case !(p.ResolveRate >= 0.1 && p.ResolveRate <= 100):
		return bad("[Polling] ResolveRate", p.ResolveRate)
	case !(c.SIP.Rate > 0) || math.IsInf(c.SIP.Rate, 0):
		return bad("[SIP] Rate", c.SIP.Rate)
	case !(c.Delivery.ReassertRate >= 0) || math.IsInf(c.Delivery.ReassertRate, 0):
		return bad("[Delivery] ReassertRate", c.Delivery.ReassertRate)
	case c.SIP.Concurrency < 1 || c.HTTP.Concurrency < 1 || c.Delivery.BatchSize < 1:
		return bad("Concurrency/BatchSize", []int{c.SIP.Concurrency, c.HTTP.Concurrency, c.Delivery.BatchSize})
	case c.Delivery.RetryMin <= 0 || c.Delivery.RetryMax < c.Delivery.RetryMin:
		return bad("[Delivery] RetryMin/RetryMax", []any{c.Delivery.RetryMin, c.Delivery.RetryMax})
	case c.SecretWarnDays < 1:
		return bad("[General] SecretWarnDays", c.SecretWarnDays)
	}
	w, wr := c.PBX.Watch, c.PBX.Write
	switch {
	case !slices.Contains(watchModes, w.Watch):
		return bad("[PBX] Watch", w.Watch)
	case w.Watch != "off" && c.SIP.Server == "" && c.SIP.OutboundProxy == "":
		return bad("[PBX] Watch without [SIP] Server", w.Watch)
	case w.Expires < minSubscribeExpires || w.Expires > maxSubscribeExpires:
		return bad("[PBX] SubscribeExpires", w.Expires)
	case !(w.Rate > 0) || math.IsInf(w.Rate, 0):
		return bad("[PBX] SubscribeRate", w.Rate)
	case wr.Expiration < minTeamsExpiration || wr.Expiration > maxTeamsExpiration:
		return bad("[PBX] TeamsExpiration", wr.Expiration)
	}
	if w.Listen != "" {
		host, port, err := net.SplitHostPort(w.Listen)
		if n, ok := portNumber(port); err != nil || host == "" || !ok || n < 1 {
			return bad("[PBX] Listen", w.Listen)
		}
	}
	for _, p := range []*write.Pair{wr.InCall, wr.Ringing, wr.DND, wr.Away} {
		if p != nil && !slices.Contains(write.Allowed, *p) {
			return bad("a [PBX] pair setPresence refuses", *p)
		}
	}
	ids := map[string]bool{}
	for _, a := range c.Accounts {
		switch {
		case a.TenantID == "" || a.ClientID == "":
			return bad("[Account."+a.ID+"] TenantID/ClientID", a.TenantID+"/"+a.ClientID)
		case ids[strings.ToLower(a.ID)]:
			return bad("a second [Account."+a.ID+"]", a.ID)
		case !(a.BudgetShare >= 0.01 && a.BudgetShare <= 0.90):
			return bad("[Account."+a.ID+"] BudgetShare", a.BudgetShare)
		case a.BudgetRequests < 1 || a.BudgetWindow < 1e9:
			return bad("[Account."+a.ID+"] BudgetRequests/BudgetWindow", []any{a.BudgetRequests, a.BudgetWindow})
		}
		ids[strings.ToLower(a.ID)] = true
	}
	return ""
}

// setKeys are keys `config set` writes whose value loads back as written, with
// where Load puts it.
var setKeys = []struct {
	key    string
	secret bool
	get    func(*Config) string
	put    func(*Config, string)
}{
	{"Account.main.ClientSecret", true,
		func(c *Config) string { return c.Accounts[0].ClientSecret.Reveal() },
		func(c *Config, v string) { c.Accounts[0].ClientSecret = Secret(v) }},
	{"SIP.Password", true,
		func(c *Config) string { return c.SIP.Password.Reveal() },
		func(c *Config, v string) { c.SIP.Password = Secret(v) }},
	{"HTTP.Header.X-Api-Key", true,
		func(c *Config) string { return c.HTTP.Headers["X-Api-Key"].Reveal() },
		func(c *Config, v string) { c.HTTP.Headers["X-Api-Key"] = Secret(v) }},
	{"Account.main.Username", false,
		func(c *Config) string { return c.Accounts[0].Username },
		func(c *Config, v string) { c.Accounts[0].Username = v }},
	{"SIP.Username", false,
		func(c *Config) string { return c.SIP.Username },
		func(c *Config, v string) { c.SIP.Username = v }},
	{"SIP.ServerName", false,
		func(c *Config) string { return c.SIP.ServerName },
		func(c *Config, v string) { c.SIP.ServerName = v }},
	{"General.LogFile", false,
		func(c *Config) string { return c.LogFile },
		func(c *Config, v string) { c.LogFile = resolvePath(c.Dir, v) }},
	{"PBX.Listen", false,
		func(c *Config) string { return c.PBX.Watch.Listen },
		func(c *Config, v string) { c.PBX.Watch.Listen = v }},
}

// setBase is the Presence.ini `config set` edits in FuzzConfigSet: each key of
// setKeys is set, among comments, so that a change of one shows.
const setBase = `; Presence.ini of a test site
MSTeamsPresence.Enable = 1

[General]
LogFile = presencebridge.log ; rotated at 10 MB

[Account.main]
TenantID = contoso.onmicrosoft.com
ClientID = 11111111-2222-3333-4444-555555555555
Auth = secret
ClientSecret = first-secret
Username = presence-svc@contoso.onmicrosoft.com

[SIP]
Server = pbx.contoso.local
Username = presencebridge
Password = first-password
ServerName = pbx.contoso.local

[HTTP]
URL = https://cti.contoso.local/presence
Header.X-Api-Key = first-key
`

// FuzzConfigSet: a value `config set` writes (into a UTF-8, a CRLF-with-BOM or
// a UTF-16 file) loads back exactly as given and changes nothing else; a value
// it refuses leaves the file as it was; a secret is written encrypted and never
// shows in its error.
func FuzzConfigSet(f *testing.F) {
	for i, v := range []string{"plain", "anna@contoso.com", `C:\ProgramData\presencebridge\log.txt`, " spaced ", `"quoted"`, "'single",
		"a ;b", "a #b", "a\t;b", ";starts", "#starts", "x=y=z", "Jürgen Müller", "\u00a0nbsp\u00a0", "tab\tinside", "`tick",
		"10.0.0.5:5070", "[2001:db8::5]:5070", "bridge.contoso.local:05070",
		"two\nlines", "cr\rreturn", "nul\x00", "\xff\xfe", strings.Repeat("long", 4096), "enc:v1:notreally", ""} {
		f.Add(v, uint8(i), uint8(i))
	}
	// Line breaks and a NUL in values that are not encrypted.
	f.Add("svc@contoso.com\nAuth = devicecode", uint8(3), uint8(0))
	f.Add("presencebridge\r", uint8(4), uint8(1))
	f.Add("pbx\x00.contoso.local", uint8(5), uint8(2))
	dir := f.TempDir()
	path := filepath.Join(dir, "Presence.ini")
	f.Fuzz(func(t *testing.T, value string, which, form uint8) {
		k := setKeys[int(which)%len(setKeys)]
		if k.secret {
			// A secret is written encrypted, so any bytes will do; the markers make
			// a leak of it findable.
			value = "Qx7" + value + "Zw9"
		}
		base := setBase
		var raw []byte
		switch form % 3 {
		case 0:
			raw = []byte(base)
		case 1:
			raw = []byte("\ufeff" + strings.ReplaceAll(base, "\n", "\r\n"))
		case 2:
			raw = utf16Bytes(strings.ReplaceAll(base, "\n", "\r\n"), false)
		}
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		before, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		err = Set(path, []Setting{{k.key, value}})
		if err != nil {
			if after, _ := os.ReadFile(path); !bytes.Equal(after, raw) {
				t.Fatalf("Set refused %q (%v) but changed the file", value, err)
			}
			if k.secret && strings.Contains(err.Error(), value) {
				t.Fatalf("the secret is in the error: %v", err)
			}
			if !strings.Contains(err.Error(), "Presence.ini") && !strings.Contains(err.Error(), k.key) {
				t.Fatalf("error %q names neither the file nor the key", err)
			}
			return
		}
		after, err := Load(path)
		if err == nil && k.get(after) == expectLoaded(k.key, after, value) {
			if k.secret && bytes.Contains(mustRead(t, path), []byte(value)) {
				t.Fatalf("the secret %q was written in plain text", value)
			}
			k.put(before, value)
			if b, a := before.Redacted(), after.Redacted(); a != b {
				t.Fatalf("setting %s changed more than that key:\n--- want\n%s--- got\n%s", k.key, b, a)
			}
			return
		}
		if err != nil {
			t.Fatalf("Set(%s = %q) wrote a file that does not load: %v", k.key, value, err)
		}
		t.Fatalf("Set(%s = %q) loads back as %q", k.key, value, k.get(after))
	})
}

// expectLoaded is what Load should give for value written to key: the value, or
// for LogFile the path resolved against the INI's folder.
func expectLoaded(key string, c *Config, value string) string {
	if key == "General.LogFile" {
		return resolvePath(c.Dir, value)
	}
	return value
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
