package asterisk

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/users"
)

func TestDeviceNames(t *testing.T) {
	anna := users.User{UPN: "anna@contoso.com", SIPURI: "sip:anna.b@pbx.example;transport=tcp", Extension: "1000"}
	bob := users.User{UPN: "bob@contoso.com", SIPURI: "sips:+4989123;phone-context=pbx@pbx.example"}
	carl := users.User{UPN: "carl@contoso.com", Extension: "10 00"}
	for _, c := range []struct {
		template string
		u        users.User
		want     string // or the error's start
	}{
		{"teams-{extension}", anna, "teams-1000"},
		{"teams-{EXTENSION}", anna, "teams-1000"},
		{"{upn}", anna, "anna@contoso.com"},
		{"teams-{user}", anna, "teams-anna.b"},
		{"t_{user}.{extension}", anna, "t_anna.b.1000"},
		{"teams-{user}", bob, "teams-+4989123"},
		{"teams-{extension}", bob, "error: {extension} is empty for bob@contoso.com"},
		{"teams-{extension}", carl, `error: {extension} of carl@contoso.com is "10 00", and " " cannot be part`},
		{"teams-{user}", carl, "error: {user} is empty"},
		{strings.Repeat("x", 120) + "-{upn}", anna, "error: the device name of anna@contoso.com has 137 characters; Asterisk takes at most 128"},
	} {
		d, err := ParseDevice(c.template)
		if err != nil {
			t.Errorf("ParseDevice(%q): %v", c.template, err)
			continue
		}
		got, err := d.Name(c.u)
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%q for %s = %q, want %q", c.template, c.u.UPN, got, c.want)
		}
	}
}

func TestDeviceTemplatesRefused(t *testing.T) {
	for template, want := range map[string]string{
		"Stasis:teams-{extension}": "leave out the Stasis: prefix",
		"custom:{extension}":       "leave out the custom: prefix",
		"teams-{ext}":              "unknown field {ext}; the fields are {extension} (the users file's extension), {upn} and {user}",
		"teams-{extension":         "a { without its }",
		"teams-}{extension}":       "a } without its {",
		"teams&{extension}":        `"&" cannot be part of a device name`,
		"teams {extension}":        `" " cannot be part of a device name`,
		"PJSIP/{extension}":        `"/" cannot be part`,
		"teams":                    "no field, so every user would get the same device",
		"":                         "no field",
	} {
		if _, err := ParseDevice(template); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDevice(%q) = %v, want an error with %q", template, err, want)
		}
	}
}

// Users the template names no device for are not queued for Asterisk; one
// that gets there all the same (an item from before a template change) is
// refused for good, with the reason.
func TestAcceptsOnlyUsersWithADevice(t *testing.T) {
	s := DefaultSettings()
	s.URL = "http://127.0.0.1:1/ari"
	tg := newTarget(t, s)
	with, without := fakeUser("1000"), users.User{UPN: "x@contoso.com", SIPURI: "sip:x@pbx.example"}
	if !tg.Accepts(with) || tg.Accepts(without) {
		t.Errorf("Accepts: with an extension %v, without %v", tg.Accepts(with), tg.Accepts(without))
	}
	if dev, err := tg.DeviceOf(with); dev != "Stasis:teams-1000" || err != nil {
		t.Errorf("DeviceOf = %q, %v", dev, err)
	}
	err := tg.Send(context.Background(), []delivery.Item{{User: without, Reason: delivery.ReasonChange}})[0]
	var perm *delivery.PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "[Asterisk] Device teams-{extension}: {extension} is empty for x@contoso.com") {
		t.Errorf("err = %v", err)
	}
}

func TestNewRefusesIncompleteSettings(t *testing.T) {
	for name, s := range map[string]Settings{
		"no URL":      DefaultSettings(),
		"AMI no addr": func() Settings { s := DefaultSettings(); s.Mode = ModeAMI; s.URL = "http://x/ari"; return s }(),
		"no timeout":  func() Settings { s := DefaultSettings(); s.URL = "http://x/ari"; s.Timeout = 0; return s }(),
	} {
		if _, err := New(Options{Settings: s}); err == nil {
			t.Errorf("%s: New accepted %+v", name, s)
		}
	}
}

// The README quotes the busy-on-busy example the integration test runs, as
// it is.
func TestREADMEQuotesTheBusyOnBusyExample(t *testing.T) {
	example, err := os.ReadFile("testdata/busy-on-busy.conf")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```\n"+string(example)+"```\n") {
		t.Errorf("README.md does not quote testdata/busy-on-busy.conf as it is:\n%s", example)
	}
}
