package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The MSI's silent install writes TENANTID, CLIENTID, AUTH, USERNAME and
// CLIENTSECRET into the shipped Presence.ini (CRLF, full of comments) with Set.
func TestSetIntoTheExample(t *testing.T) {
	example, err := os.ReadFile("../../Presence.ini.example")
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(string(example), "\n", "\r\n")
	path := writeINI(t, t.TempDir(), []byte(crlf))
	err = Set(path, []Setting{
		{"Account.main.TenantID", "fabrikam.onmicrosoft.com"},
		{"account.MAIN.clientid", "99999999-2222-3333-4444-555555555555"},
		{"Account.main.Auth", "secret"},
		{"Account.main.ClientSecret", "s3cr3t ;value"},
		{"SIP.Server", "pbx.fabrikam.example"},
		{"MSTeamsPresence.Enable", "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	got := string(raw)
	if strings.Count(got, "\r\n") != strings.Count(got, "\n") {
		t.Error("line endings are no longer all CRLF")
	}
	if strings.Contains(got, "s3cr3t") {
		t.Error("the client secret was written in plain text")
	}
	for _, want := range []string{"\r\nTenantID = fabrikam.onmicrosoft.com\r\n", "\r\nClientID = 99999999-2222-3333-4444-555555555555\r\n",
		"\r\nAuth = secret\r\n", "\r\nClientSecret = enc:v1:", "\r\nServer = pbx.fabrikam.example\r\n", "\r\nMSTeamsPresence.Enable = 0\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("the file lacks %q", want)
		}
	}
	// Only the six lines changed: every comment stays.
	before, after := strings.Split(crlf, "\r\n"), strings.Split(got, "\r\n")
	if len(before) != len(after) {
		t.Fatalf("%d lines became %d", len(before), len(after))
	}
	changed := 0
	for i := range before {
		if before[i] != after[i] {
			changed++
		}
	}
	if changed != 6 {
		t.Errorf("%d lines changed; want 6", changed)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Accounts[0]
	if a.TenantID != "fabrikam.onmicrosoft.com" || a.Auth != AuthSecret || string(a.ClientSecret) != "s3cr3t ;value" || cfg.TeamsEnabled {
		t.Fatalf("loaded %+v, TeamsEnabled=%v", a, cfg.TeamsEnabled)
	}
}

func TestSetAddsKeysAndSections(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte("; top comment\n[Account.main]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\n\n[Polling]\nInterval = 5s\n"))
	err := Set(path, []Setting{
		{"Account.main.Username", "svc@contoso.onmicrosoft.com"},
		{"HTTP.URL", "https://cti.example/presence"},
		{"RichPresence.WinningTechnology", "MSTeams"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	want := "; top comment\nRichPresence.WinningTechnology = MSTeams\n[Account.main]\nTenantID = contoso.onmicrosoft.com\nClientID = 11111111-2222-3333-4444-555555555555\nUsername = svc@contoso.onmicrosoft.com\n\n[Polling]\nInterval = 5s\n\n[HTTP]\nURL = https://cti.example/presence\n"
	if string(raw) != want {
		t.Fatalf("got\n%s\nwant\n%s", raw, want)
	}
}

// A value the service would refuse is not written: the file stays as it was.
func TestSetRefusesWhatWouldNotLoad(t *testing.T) {
	content := []byte(minimal)
	path := writeINI(t, t.TempDir(), content)
	err := Set(path, []Setting{{"Polling.Interval", "5 minutes"}})
	if err == nil || !strings.Contains(err.Error(), `[Polling] Interval = "5 minutes"`) || !strings.Contains(err.Error(), "not written") {
		t.Fatalf("Set of a bad interval: %v", err)
	}
	for _, k := range []string{"TenantID", "Nosuch.Key", "Account.main."} {
		if err := Set(path, []Setting{{k, "x"}}); err == nil {
			t.Errorf("Set(%q) was accepted", k)
		}
	}
	if raw, _ := os.ReadFile(path); string(raw) != string(content) {
		t.Fatalf("the file changed:\n%s", raw)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "secret.key")); err == nil {
		t.Error("a key file was made with no secret to encrypt")
	}
}

// A value with a line break, a NUL or bytes that are not UTF-8 would change the
// file under its other lines (a split line, a file read as binary or as
// Windows-1252): Set refuses it, names the key, and writes nothing. The fuzzer
// found all three.
func TestSetRefusesWhatIsNotOneLineOfText(t *testing.T) {
	dir := t.TempDir()
	content := []byte(minimal + "[General]\nLogFile = Jürgen.log\n")
	path := writeINI(t, dir, content)
	for _, s := range []Setting{{"SIP.Username", "pb\rx"}, {"SIP.Username", "pb\nServer = evil"}, {"SIP.Username", "pb\x00x"},
		{"SIP.Username", "pb\xe9"}, {"SIP.Password", "se\ncret"}} {
		err := Set(path, []Setting{s})
		if err == nil || !strings.Contains(err.Error(), s.Key+": not written") || !strings.Contains(err.Error(), "one line of text") {
			t.Errorf("Set(%s = %q) = %v, want a refusal naming the key", s.Key, s.Value, err)
		}
		if s.Key == "SIP.Password" && strings.Contains(err.Error(), "cret") {
			t.Errorf("the secret is in the error: %v", err)
		}
		if raw, _ := os.ReadFile(path); string(raw) != string(content) {
			t.Fatalf("Set(%q) changed the file:\n%s", s.Value, raw)
		}
	}
}

// A legacy key goes above the first section even when the file starts with a
// header (it was added to the first section, so the file did not load and
// `config set MSTeamsPresence.Enable=0` refused to write).
func TestSetLegacyKeyIntoAFileStartingWithAHeader(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal+"\n[Polling]\nInterval = 5s\n"))
	if err := Set(path, []Setting{{"MSTeamsPresence.Enable", "0"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if want := "MSTeamsPresence.Enable = 0\n" + minimal + "\n[Polling]\nInterval = 5s\n"; string(raw) != want {
		t.Fatalf("got\n%s\nwant\n%s", raw, want)
	}
	if c, err := Load(path); err != nil || c.TeamsEnabled {
		t.Fatalf("Load = %v, TeamsEnabled %v", err, c != nil && c.TeamsEnabled)
	}
}

// `config set` rewrites the line of a value Load refuses to read, so it can fix
// it, rather than adding a second line under it.
func TestSetRewritesARefusedValue(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal+"[General]\nUsersFile = `users.csv` ; from another INI dialect\n"))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "Presence.ini:5: [General] UsersFile: a value may not start with `") {
		t.Fatalf("Load before = %v", err)
	}
	if err := Set(path, []Setting{{"General.UsersFile", "staff.csv"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if want := minimal + "[General]\nUsersFile = staff.csv\n"; string(raw) != want {
		t.Fatalf("got\n%s\nwant\n%s", raw, want)
	}
}

// A section or key that Set adds is written as the documentation spells it,
// however the command line spelled it.
func TestSetAddsInTheDocumentedSpelling(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal))
	if err := Set(path, []Setting{{"http.url", "https://cti.example/presence"}, {"account.EU.tenantid", "contoso.onmicrosoft.com"},
		{"ACCOUNT.eu.CLIENTID", "22222222-2222-3333-4444-555555555555"}, {"account.eu.domains", "contoso.de"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	want := minimal + "\n[HTTP]\nURL = https://cti.example/presence\n\n[Account.EU]\nTenantID = contoso.onmicrosoft.com\nClientID = 22222222-2222-3333-4444-555555555555\nDomains = contoso.de\n"
	if string(raw) != want {
		t.Fatalf("got\n%s\nwant\n%s", raw, want)
	}
}
