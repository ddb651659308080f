package config

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.golden from the current output")

// writeINI writes content as dir/Presence.ini and returns its path.
func writeINI(t testing.TB, dir string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, "Presence.ini")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimal = "[Account.main]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\n"

func mustLoad(t *testing.T, content string) *Config {
	t.Helper()
	c, err := Load(writeINI(t, t.TempDir(), []byte(content)))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// TestLoadBadConfigs compares the whole error text of each testdata/bad/*.ini with
// its .golden file (blackbox_exporter's TestLoadBadConfigs). The INI is copied to a
// temp folder as Presence.ini; that folder reads "$DIR" in the golden text.
func TestLoadBadConfigs(t *testing.T) {
	inis, err := filepath.Glob("testdata/bad/*.ini")
	if err != nil || len(inis) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, ini := range inis {
		name := strings.TrimSuffix(filepath.Base(ini), ".ini")
		t.Run(name, func(t *testing.T) {
			content, err := os.ReadFile(ini)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			_, err = Load(writeINI(t, dir, content))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Load = %v, want *config.Error", err)
			}
			got := strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n"
			golden := strings.TrimSuffix(ini, ".ini") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("error text differs\n--- got\n%s--- want\n%s", got, want)
			}
			if len(cerr.Problems) != strings.Count(got, "\n") {
				t.Errorf("%d problems but %d lines", len(cerr.Problems), strings.Count(got, "\n"))
			}
		})
	}
}

// TestSecretsNotInErrors: secrets from bad configs never reach the error text.
func TestSecretsNotInErrors(t *testing.T) {
	content, err := os.ReadFile("testdata/bad/secrets.ini")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Load(writeINI(t, t.TempDir(), content))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, secret := range []string{"Pr0xy", "Secret@", "Cl1entSecret", "6c1a3b5e", "Sup3r", "#value"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error text holds secret %q:\n%s", secret, err)
		}
	}
	if !strings.Contains(err.Error(), `"ftp://bob:***@proxy.example:21"`) {
		t.Errorf("proxy URL not shown redacted:\n%s", err)
	}
}

func TestLoadExample(t *testing.T) {
	c, err := Load("../../Presence.ini.example")
	if err != nil {
		t.Fatalf("Presence.ini.example does not load: %v", err)
	}
	abs, _ := filepath.Abs("../..")
	if c.Dir != abs || c.StateFile != filepath.Join(abs, DefaultStateFile) || c.UsersFile != filepath.Join(abs, DefaultUsersFile) {
		t.Errorf("Dir/StateFile/UsersFile = %q %q %q", c.Dir, c.StateFile, c.UsersFile)
	}
	// The example shows the defaults: it must load to the same values as an INI
	// that sets nothing but the account.
	d := mustLoad(t, minimal+"Username = presence-svc@contoso.onmicrosoft.com\n")
	d.Path, d.Dir, d.StateFile, d.UsersFile = c.Path, c.Dir, c.StateFile, c.UsersFile
	if got, want := c.Redacted(), d.Redacted(); got != want {
		t.Errorf("example differs from the defaults:\n%s\nwant\n%s", got, want)
	}

	// Every key is in the example as a live line, under a comment giving its default.
	raw, err := os.ReadFile("../../Presence.ini.example")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	f, problems := scanINI(string(raw))
	if len(problems) > 0 {
		t.Fatalf("scanINI: %v", problems)
	}
	for sec, keys := range knownKeys {
		scanSec := sec
		switch sec {
		case "":
			scanSec = topSection
		case "account":
			scanSec = "account.main"
		}
		for _, k := range keys {
			var at []int
			if s := f.byID[scanSec]; s != nil && s.byID[strings.ToLower(k)] != nil {
				for _, set := range s.byID[strings.ToLower(k)].sets {
					at = append(at, set.line)
				}
			}
			if len(at) != 1 {
				t.Errorf("key %q of section %q is on lines %v of the example, want exactly one live line", k, sec, at)
				continue
			}
			i := at[0] - 2 // index of the line above
			for i >= 0 && !strings.HasPrefix(lines[i], ";") {
				i--
			}
			if i < 0 || !(strings.Contains(lines[i], "Default") || strings.Contains(lines[i], "Required")) {
				t.Errorf("key %q (line %d) has no comment saying its default", k, at[0])
			}
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "Presence.ini")
	_, err := Load(p)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
	for _, want := range []string{p, "Presence.ini.example", "every key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadBinaryFile(t *testing.T) {
	_, err := Load(writeINI(t, t.TempDir(), []byte("\x00\x01bolt\x00\x00\x00\x00")))
	if err == nil || !strings.Contains(err.Error(), "not a text file") {
		t.Fatalf("err = %v", err)
	}
}

func utf16Bytes(s string, bigEndian bool) []byte {
	var b bytes.Buffer
	order := binary.ByteOrder(binary.LittleEndian)
	bom := []byte{0xFF, 0xFE}
	if bigEndian {
		order, bom = binary.BigEndian, []byte{0xFE, 0xFF}
	}
	b.Write(bom)
	for _, u := range utf16.Encode([]rune(s)) {
		_ = binary.Write(&b, order, u)
	}
	return b.Bytes()
}

// TestEncodings: the files Windows editors write all load to the same Config.
func TestEncodings(t *testing.T) {
	text := "MSTeamsPresence.Enable = 1 ; on\n[General]\nStateFile = C:\\Daten\\Jürgen\\state.db\nLogLevel = warn\n" +
		"[Proxy]\nURL = http://bob:p#ss@proxy.example:8080\n" + minimal + "Domains = contoso.com\n"
	crlf := strings.ReplaceAll(text, "\n", "\r\n")
	cases := map[string][]byte{
		"UTF-8":              []byte(text),
		"UTF-8 BOM CRLF":     append([]byte{0xEF, 0xBB, 0xBF}, crlf...),
		"UTF-16 LE BOM CRLF": utf16Bytes(crlf, false),
		"UTF-16 BE BOM":      utf16Bytes(text, true),
		"Windows-1252 CRLF":  bytes.ReplaceAll([]byte(crlf), []byte("ü"), []byte{0xFC}),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := Load(writeINI(t, t.TempDir(), data))
			if err != nil {
				t.Fatal(err)
			}
			if c.StateFile != `C:\Daten\Jürgen\state.db` {
				t.Errorf("StateFile = %q", c.StateFile)
			}
			if c.LogLevel != "warn" || !c.TeamsEnabled {
				t.Errorf("LogLevel %v TeamsEnabled %v", c.LogLevel, c.TeamsEnabled)
			}
			// What transport does with Proxy.URL: url.Parse must give the password back.
			if u, err := url.Parse(c.Proxy.URL); err != nil {
				t.Errorf("url.Parse(Proxy.URL): %v", err)
			} else if pw, _ := u.User.Password(); pw != "p#ss" || u.Host != "proxy.example:8080" {
				t.Errorf("proxy password %q host %q, want p#ss proxy.example:8080", pw, u.Host)
			}
			if len(c.Accounts) != 1 || !slices.Equal(c.Accounts[0].Domains, []string{"contoso.com"}) {
				t.Errorf("Accounts = %+v", c.Accounts)
			}
		})
	}
}

func TestValueSyntax(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(writeINI(t, dir, []byte(`
[general]
statefile = C:\ProgramData\presencebridge\
usersfile = "\\fileserver\share\users.csv" ; quoted, comment after
LOGLEVEL = 'debug'
ControlAddr = off	# a tab before the comment
[PROXY]
url = http://dom\user:p#ss;w@rd:x@proxy.example:3128   ; only " ;" starts a comment
cafile = ca.pem
[Polling]
Interval = "2m"
BudgetShare = 12.5%
[ACCOUNT.Main]
tenantid = {4F1C3C57-0B5E-4D0E-9A55-3B1A7F0E2C11}
clientid = 11111111-2222-3333-4444-555555555555
auth = Client_Secret
clientsecret = "  s3cr;t #x "
username = svc@contoso.com
`)))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := url.Parse(c.Proxy.URL)
	if err != nil {
		t.Fatalf("url.Parse(Proxy.URL): %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"StateFile keeps its trailing backslash", c.StateFile, `C:\ProgramData\presencebridge\`},
		{"UsersFile UNC path", c.UsersFile, `\\fileserver\share\users.csv`},
		{"ControlAddr off", c.ControlAddr, ""},
		{"proxy user", proxy.User.Username(), `dom\user`},
		{"proxy host", proxy.Host, "proxy.example:3128"},
		{"CAFile relative to the INI", c.Proxy.CAFile, filepath.Join(c.Dir, "ca.pem")},
		{"account id as written", c.Accounts[0].ID, "Main"},
		{"tenant without braces", c.Accounts[0].TenantID, "4F1C3C57-0B5E-4D0E-9A55-3B1A7F0E2C11"},
		{"auth alias", string(c.Accounts[0].Auth), string(AuthSecret)},
		{"quoted secret verbatim", c.Accounts[0].ClientSecret.Reveal(), "  s3cr;t #x "},
		{"authority", c.Accounts[0].Authority(), "https://login.microsoftonline.com/4F1C3C57-0B5E-4D0E-9A55-3B1A7F0E2C11"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.name, ck.got, ck.want)
		}
	}
	if pw, _ := proxy.User.Password(); pw != "p#ss;w@rd:x" {
		t.Errorf("proxy password = %q", pw)
	}
	if c.LogLevel != "debug" || c.Polling.Interval != 2*time.Minute || c.Polling.BudgetShare != 0.125 {
		t.Errorf("LogLevel %v Interval %v BudgetShare %v", c.LogLevel, c.Polling.Interval, c.Polling.BudgetShare)
	}
}

func TestProxyURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"direct", "direct"},
		{"None", "direct"},
		{"HTTP://proxy.example:8080/", "http://proxy.example:8080"},
		{"socks5h://u:p@[::1]:1080", "socks5h://u:p@[::1]:1080"},
		{"http://bob:a b%41@proxy:3128", "http://bob:a%20bA@proxy:3128"}, // percent-decoded once, re-encoded
	}
	for _, tc := range cases {
		c := mustLoad(t, "[Proxy]\nURL = "+tc.in+"\n"+minimal)
		if c.Proxy.URL != tc.want {
			t.Errorf("URL = %q loaded as %q, want %q", tc.in, c.Proxy.URL, tc.want)
		}
	}
}

func TestLegacyKeys(t *testing.T) {
	cases := []struct {
		ini      string
		enabled  bool
		winning  string
		accounts int
	}{
		{"MSTeamsPresence.Enable=0\n", false, WinningSipSimple, 0},
		{"mstEAMSpresence.enable = 0\nrichpresence.winningtechnology = msteams\n", false, WinningMSTeams, 0},
		{"RichPresence.WinningTechnology = SIPSIMPLE\n" + minimal, true, WinningSipSimple, 1},
		{minimal, true, WinningSipSimple, 1},
	}
	for _, tc := range cases {
		c := mustLoad(t, tc.ini)
		if c.TeamsEnabled != tc.enabled || c.WinningTechnology != tc.winning || len(c.Accounts) != tc.accounts {
			t.Errorf("%q: TeamsEnabled %v WinningTechnology %q accounts %d", tc.ini, c.TeamsEnabled, c.WinningTechnology, len(c.Accounts))
		}
	}
}

func TestAccountResolution(t *testing.T) {
	c := mustLoad(t, `
[Microsoft]
LoginURL = https://login.microsoftonline.us/
GraphURL = https://graph.microsoft.us/v1.0/
[Polling]
BudgetRequests = 1000
BudgetShare = 50
[Account.gov]
TenantID = contoso.onmicrosoft.us
ClientID = 11111111-2222-3333-4444-555555555555
[Account.sim]
TenantID = 4f1c3c57-0b5e-4d0e-9a55-3b1a7f0e2c11
ClientID = presencebridge-demo
LoginURL = https://127.0.0.1:8443
GraphURL = https://127.0.0.1:8443/v1.0
BudgetRequests = 200
BudgetWindow = 10s
BudgetShare = 90
Domains = CONTOSO.example, contoso.example
`)
	gov, sim := c.Accounts[0], c.Accounts[1]
	if gov.Authority() != "https://login.microsoftonline.us/contoso.onmicrosoft.us" || gov.GraphURL != "https://graph.microsoft.us/v1.0" {
		t.Errorf("gov: %s %s", gov.Authority(), gov.GraphURL)
	}
	if gov.BudgetRequests != 1000 || gov.BudgetWindow != 30*time.Second || gov.BudgetShare != 0.5 {
		t.Errorf("gov budget %d / %v, share %v", gov.BudgetRequests, gov.BudgetWindow, gov.BudgetShare)
	}
	if sim.BudgetRequests != 200 || sim.BudgetWindow != 10*time.Second || sim.BudgetShare != 0.9 {
		t.Errorf("sim budget %d / %v, share %v", sim.BudgetRequests, sim.BudgetWindow, sim.BudgetShare)
	}
	if sim.ClientID != "presencebridge-demo" || !slices.Equal(sim.Domains, []string{"contoso.example"}) {
		t.Errorf("sim: %+v", sim)
	}

	// A non-GUID ClientID is only accepted for the simulated (loopback) tenant.
	_, err := Load(writeINI(t, t.TempDir(), []byte("[Account.a]\nTenantID = contoso.com\nClientID = presencebridge-demo\n")))
	if err == nil || !strings.Contains(err.Error(), "not a GUID") {
		t.Errorf("non-GUID ClientID with Microsoft's LoginURL: err = %v", err)
	}
}

func TestCertificateAccount(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.pem"), []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(writeINI(t, dir, []byte(minimal+"Auth = certificate\nCertificateFile = app.pem\n")))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Accounts[0]; a.Auth != AuthCertificate || a.CertificateFile != filepath.Join(dir, "app.pem") {
		t.Errorf("%+v", a)
	}
}

func TestControlAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:8399", "[::1]:9000", "localhost:1", "127.1.2.3:8399", "127.0.0.1:0"} {
		if c := mustLoad(t, "[General]\nControlAddr = "+ok+"\n"+minimal); c.ControlAddr != ok {
			t.Errorf("ControlAddr %q loaded as %q", ok, c.ControlAddr)
		}
	}
	for _, bad := range []string{"0.0.0.0:8399", ":8399", "192.168.1.5:8399", "127.0.0.1", "127.0.0.1:70000", "example.com:80"} {
		_, err := Load(writeINI(t, t.TempDir(), []byte("[General]\nControlAddr = "+bad+"\n"+minimal)))
		if err == nil {
			t.Errorf("ControlAddr %q accepted", bad)
		}
	}
}

func TestSuggest(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Intervall", "Interval"},
		{"interval", "Interval"},
		{"BudgetShar", "BudgetShare"},
		{"RequestTimout", "RequestTimeout"},
		{"Colour", ""},
		{"x", ""},
	}
	for _, tc := range cases {
		if got := suggest(tc.in, knownKeys["polling"]); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if d := levenshtein("kitten", "sitting"); d != 3 {
		t.Errorf("levenshtein = %d", d)
	}
}

func TestCleanValue(t *testing.T) {
	cases := []struct {
		raw, want string
		ok        bool
	}{
		{`10s ; comment`, "10s", true},
		{"10s\t# comment", "10s", true},
		{`p#ss;word`, "p#ss;word", true},
		{`; only a comment`, "", true},
		{`"a ; b" ; c`, "a ; b", true},
		{`'it''s'`, "it''s", true},
		{`"a"b"`, `a"b`, true},
		{`"unclosed`, "", false},
		{`C:\dir\`, `C:\dir\`, true},
		{`"quoted";comment`, "quoted", true},
	}
	for _, tc := range cases {
		got, ok := cleanValue(tc.raw)
		if got != tc.want || ok != tc.ok {
			t.Errorf("cleanValue(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}

// TestStateFileIsAFolder: a StateFile that names a folder is a configuration
// error (run exited 1 after verify --offline had passed it).
func TestStateFileIsAFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Load(writeINI(t, dir, []byte("[General]\nStateFile = state\n"+minimal)))
	want := fmt.Sprintf(`Presence.ini:2: [General] StateFile = %q: this is a folder; give the state file's name in it, e.g. %s`,
		filepath.Join(dir, "state"), filepath.Join(dir, "state", "presencebridge.db"))
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v\nwant %s", err, want)
	}
}
