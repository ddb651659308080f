package watch

import (
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/users"
)

// The watched address is the user's SIP URI, or the WatchURI template filled
// in from it and the users file.
func TestTarget(t *testing.T) {
	u := users.User{UPN: "anna@x", SIPURI: "sip:1000@pbx.example", Extension: "1000"}
	cases := []struct{ tmpl, want, err string }{
		{"", "sip:1000@pbx.example", ""},
		{"sip:watch-{extension}@{domain}", "sip:watch-1000@pbx.example", ""},
		{"sip:{user}-phone@{domain};transport=tcp", "sip:1000-phone@pbx.example;transport=tcp", ""},
		{"sip:{extension}@phones.example", "sip:1000@phones.example", ""},
	}
	for _, c := range cases {
		got, err := Settings{URI: c.tmpl}.Target(u)
		if got != c.want || err != nil {
			t.Errorf("%q: %q, %v; want %q", c.tmpl, got, err, c.want)
		}
	}
	noExt := u
	noExt.Extension = ""
	if _, err := (Settings{URI: "sip:watch-{extension}@{domain}"}).Target(noExt); err == nil || !strings.Contains(err.Error(), "no extension") {
		t.Errorf("a user without an extension: %v", err)
	}
	if _, err := (Settings{}).Target(users.User{UPN: "b@x"}); err == nil {
		t.Error("a user without a SIP URI has a target")
	}
}

// SetUsers subscribes to the templated address.
func TestWatchURITemplate(t *testing.T) {
	f := startFake(t)
	s := DefaultSettings()
	s.Watch, s.URI = Dialog, "sip:watch-{extension}@{domain}"
	a := anna
	a.Extension = "1000"
	sipS := startSIPSettings(f.addr())
	runWatcher(t, s, sipS, a)
	sub := f.next()
	if got := sub.Recipient.String(); got != "sip:watch-1000@pbx.test" {
		t.Errorf("SUBSCRIBE to %s; want sip:watch-1000@pbx.test", got)
	}
}
