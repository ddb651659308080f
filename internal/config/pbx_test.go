package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/pbx/watch"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/teams/write"
)

// withSIP is a [SIP] section that lets [PBX] Watch be on.
const withSIP = "[SIP]\nServer = pbx.example.com\n"

func TestPBXDefaults(t *testing.T) {
	c := mustLoad(t, minimal)
	want := PBX{Watch: watch.DefaultSettings(), Write: write.DefaultSettings()}
	if !reflect.DeepEqual(c.PBX, want) {
		t.Errorf("PBX = %+v, want the packages' defaults %+v", c.PBX, want)
	}
	if c.PBX.Watching() {
		t.Error("Watching() with Watch off")
	}
	// The defaults as the issue states them, so a change of a package's
	// DefaultSettings shows here and in Presence.ini.example.
	if w := c.PBX.Watch; w.Watch != watch.Off || w.Expires != time.Hour || w.Rate != 50 || w.Listen != "" {
		t.Errorf("Watch = %+v", w)
	}
	if wr := c.PBX.Write; pairString(wr.InCall) != "Busy/InACall" || wr.Ringing != nil || wr.DND != nil || wr.Away != nil || wr.Expiration != 5*time.Minute {
		t.Errorf("Write = %+v", wr)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %q", c.Warnings)
	}
}

func pair(a presence.Availability, act presence.Activity) *write.Pair {
	return &write.Pair{Availability: a, Activity: act}
}

func TestPBXSection(t *testing.T) {
	cases := []struct {
		ini   string
		check func(PBX) bool
	}{
		{"Watch = Dialog", func(p PBX) bool { return p.Watch.Watch == watch.Dialog && p.Watching() }},
		{"Watch = PRESENCE", func(p PBX) bool { return p.Watch.Watch == watch.Presence }},
		{"watch = both", func(p PBX) bool { return p.Watch.Watch == watch.Both }},
		{"Watch = 0", func(p PBX) bool { return p.Watch.Watch == watch.Off && !p.Watching() }},
		{"Watch = Off", func(p PBX) bool { return p.Watch.Watch == watch.Off }},
		{"SubscribeExpires = 1m", func(p PBX) bool { return p.Watch.Expires == time.Minute }},
		{"SubscribeExpires = 24h", func(p PBX) bool { return p.Watch.Expires == 24*time.Hour }},
		{"SubscribeRate = 12.5", func(p PBX) bool { return p.Watch.Rate == 12.5 }},
		{"SubscribeRate = 0.2", func(p PBX) bool { return p.Watch.Rate == 0.2 }},
		{"Listen = 10.0.0.5:5070", func(p PBX) bool { return p.Watch.Listen == "10.0.0.5:5070" }},
		{"Listen = [2001:db8::5]:5070", func(p PBX) bool { return p.Watch.Listen == "[2001:db8::5]:5070" }},
		{"Listen = bridge-01.contoso.local:5070", func(p PBX) bool { return p.Watch.Listen == "bridge-01.contoso.local:5070" }},
		{"Listen = 127.0.0.1:65535", func(p PBX) bool { return p.Watch.Listen == "127.0.0.1:65535" }},
		{"InCall = Busy, InAConferenceCall", func(p PBX) bool {
			return *p.Write.InCall == *pair(presence.Busy, presence.ActInAConferenceCall)
		}},
		{"InCall = busy / inacall", func(p PBX) bool { return *p.Write.InCall == *pair(presence.Busy, presence.ActInACall) }},
		{"InCall = off", func(p PBX) bool { return p.Write.InCall == nil }},
		{"InCall = 0", func(p PBX) bool { return p.Write.InCall == nil }},
		{"Ringing = Available/Available", func(p PBX) bool {
			return *p.Write.Ringing == *pair(presence.Available, presence.ActAvailable)
		}},
		{"DND = DONOTDISTURB,PRESENTING", func(p PBX) bool {
			return *p.Write.DND == *pair(presence.DoNotDisturb, presence.ActPresenting)
		}},
		{"Away = Away/Away", func(p PBX) bool { return *p.Write.Away == *pair(presence.Away, presence.ActAway) }},
		{"TeamsExpiration = 5m", func(p PBX) bool { return p.Write.Expiration == 5*time.Minute }},
		{"TeamsExpiration = 4h", func(p PBX) bool { return p.Write.Expiration == 4*time.Hour }},
		{"TeamsExpiration = 90m", func(p PBX) bool { return p.Write.Expiration == 90*time.Minute }},
	}
	for _, tc := range cases {
		c := mustLoad(t, withSIP+"[PBX]\n"+tc.ini+"\n"+minimal+"Auth = secret\nClientSecret = x\n")
		if !tc.check(c.PBX) {
			t.Errorf("%s: loaded as %+v (Write %+v)", tc.ini, c.PBX.Watch, c.PBX.Write)
		}
	}
	// The pairs are the loader's own: a second load does not share them.
	a, b := mustLoad(t, minimal), mustLoad(t, minimal)
	if a.PBX.Write.InCall == b.PBX.Write.InCall {
		t.Error("two configurations share one InCall pair")
	}
}

// TestPBXErrors: every message [PBX] gives, whole, on the key's line.
func TestPBXErrors(t *testing.T) {
	const pairs = "Available/Available, Busy/InACall, Busy/InAConferenceCall, Away/Away, DoNotDisturb/Presenting"
	cases := []struct{ line, want string }{
		{"Watch = on", `[PBX] Watch = "on": say which events to watch: dialog (calls, as BLF keys see them), presence (the phone's own presence) or both`},
		{"Watch = dialogs", `[PBX] Watch = "dialogs": unknown value (did you mean dialog?); use dialog (calls, as BLF keys see them), presence (the phone's own presence), both, or off`},
		{"Watch = calls", `[PBX] Watch = "calls": unknown value; use dialog (calls, as BLF keys see them), presence (the phone's own presence), both, or off`},
		{"SubscribeExpires = 30s", `[PBX] SubscribeExpires = "30s": too short; use 1m to 24h`},
		{"SubscribeExpires = 25h", `[PBX] SubscribeExpires = "25h": too long; use 1m to 24h`},
		{"SubscribeExpires = 3600", `[PBX] SubscribeExpires = "3600": a duration needs a unit; write e.g. 3600s for seconds or 3600m for minutes`},
		{"SubscribeExpires = PT1H", `[PBX] SubscribeExpires = "PT1H": an ISO 8601 duration; write it as 1h (durations here are a number with a unit: 30s, 15m, 1h30m)`},
		{"SubscribeExpires = Inf", `[PBX] SubscribeExpires = "Inf": not a duration; use a number with a unit, e.g. 10s or 2m`},
		{"SubscribeRate = 0", `[PBX] SubscribeRate = "0": SUBSCRIBE requests cannot be turned off on their own; set Watch = off to stop watching the PBX, or use SUBSCRIBE requests per second, e.g. 50`},
		{"SubscribeRate = -5", `[PBX] SubscribeRate = "-5": not a positive number; use SUBSCRIBE requests per second, e.g. 50`},
		{"SubscribeRate = NaN", `[PBX] SubscribeRate = "NaN": not a positive number; use SUBSCRIBE requests per second, e.g. 50`},
		{"SubscribeRate = +Inf", `[PBX] SubscribeRate = "+Inf": not a positive number; use SUBSCRIBE requests per second, e.g. 50`},
		{"Listen = 5070", `[PBX] Listen = "5070": not host:port; use this host's address toward the PBX and a port, e.g. 10.0.0.5:5070, or leave it empty for a free port on that address`},
		{"Listen = :5070", `[PBX] Listen = ":5070": not host:port; use this host's address toward the PBX and a port, e.g. 10.0.0.5:5070, or leave it empty for a free port on that address`},
		{"Listen = 10.0.0.5:0", `[PBX] Listen = "10.0.0.5:0": port "0" is not a number from 1 to 65535; use e.g. 10.0.0.5:5070, or leave Listen empty for a free port`},
		{"Listen = 10.0.0.5:65536", `[PBX] Listen = "10.0.0.5:65536": port "65536" is not a number from 1 to 65535; use e.g. 10.0.0.5:5070, or leave Listen empty for a free port`},
		{"Listen = 10.0.0.5:+5070", `[PBX] Listen = "10.0.0.5:+5070": port "+5070" is not a number from 1 to 65535; use e.g. 10.0.0.5:5070, or leave Listen empty for a free port`},
		{"Listen = [::]:5070", `[PBX] Listen = "[::]:5070": :: is not an address the PBX can send NOTIFYs to (it is the Contact of every subscription); use this host's address toward the PBX, e.g. 10.0.0.5:5070, or leave Listen empty`},
		{"Listen = bad_host:5070", `[PBX] Listen = "bad_host:5070": "bad_host" is not a host name or IP address; use this host's address toward the PBX, e.g. 10.0.0.5:5070, or leave Listen empty`},
		{"Listen = 10.0.0.256:5070", `[PBX] Listen = "10.0.0.256:5070": "10.0.0.256" is not a host name or IP address; use this host's address toward the PBX, e.g. 10.0.0.5:5070, or leave Listen empty`},
		{"WatchURI = sip:watch-{ext}@{domain}", `[PBX] WatchURI = "sip:watch-{ext}@{domain}": {ext} is not a placeholder; use {user}, {domain}, {extension}, e.g. sip:watch-{extension}@{domain}`},
		{"WatchURI = watch-{extension}", `[PBX] WatchURI = "watch-{extension}": not a SIP URI template; write e.g. sip:watch-{extension}@{domain} (the user's SIP URI gives {user} and {domain}, the users file {extension})`},
		{"InCall = Busy/InAMeeting", `[PBX] InCall = "Busy/InAMeeting": setPresence cannot set Busy/InAMeeting (Microsoft Graph refuses it); use one of ` + pairs + `, or off to write nothing`},
		{"Ringing = Busy/Busy", `[PBX] Ringing = "Busy/Busy": setPresence cannot set Busy/Busy (Microsoft Graph refuses it); use one of ` + pairs + `, or off to write nothing`},
		{"DND = DoNotDisturb/DoNotDisturb", `[PBX] DND = "DoNotDisturb/DoNotDisturb": setPresence cannot set DoNotDisturb/DoNotDisturb (Microsoft Graph refuses it); use one of ` + pairs + `, or off to write nothing`},
		{"Away = Away", `[PBX] Away = "Away": not a Teams pair; write Availability/Activity, one of ` + pairs + `, or off to write nothing`},
		{"InCall = Busy, InCall", `[PBX] InCall = "Busy, InCall": not a Teams pair (did you mean Busy/InACall?); write Availability/Activity, one of ` + pairs + `, or off to write nothing`},
		{"InCall = Bussy/InACall", `[PBX] InCall = "Bussy/InACall": not a Teams pair (did you mean Busy/InACall?); write Availability/Activity, one of ` + pairs + `, or off to write nothing`},
		{"TeamsExpiration = 1m", `[PBX] TeamsExpiration = "1m": too short; use 5m to 4h`},
		{"TeamsExpiration = 4h1s", `[PBX] TeamsExpiration = "4h1s": too long; use 5m to 4h`},
		{"TeamsExpiration = PT5M", `[PBX] TeamsExpiration = "PT5M": an ISO 8601 duration; write it as 5m (durations here are a number with a unit: 30s, 15m, 1h30m)`},
	}
	for _, tc := range cases {
		_, err := Load(writeINI(t, t.TempDir(), []byte(withSIP+"[PBX]\n"+tc.line+"\n"+minimal)))
		if want := "Presence.ini:4: " + tc.want; err == nil || err.Error() != want {
			t.Errorf("%s:\n got %v\nwant %s", tc.line, err, want)
		}
	}
}

// TestPBXNeedsSIP: Watch on needs [SIP] Server; a [SIP] that is set but
// wrong is reported once, by [SIP].
func TestPBXNeedsSIP(t *testing.T) {
	mustLoad(t, withSIP+"[PBX]\nWatch = dialog\n"+minimal)
	mustLoad(t, "[PBX]\nWatch = off\n"+minimal)
	cases := []struct{ ini, want string }{
		{"[PBX]\nWatch = dialog\n",
			`Presence.ini:2: [PBX] Watch = "dialog": watching needs the PBX's SIP server: set [SIP] Server = <host:port of the PBX> (the SUBSCRIBEs use [SIP]'s transport, outbound proxy, TLS and credentials), or set Watch = off`},
		{"[SIP]\nUsername = pb\n[PBX]\nWatch = presence\n",
			`Presence.ini:2: [SIP] Username is set but Server is not, so nothing is sent over SIP; set Server = <host:port of the PBX's presence server>` + "\n" +
				`Presence.ini:4: [PBX] Watch = "presence": watching needs the PBX's SIP server: set [SIP] Server = <host:port of the PBX> (the SUBSCRIBEs use [SIP]'s transport, outbound proxy, TLS and credentials), or set Watch = off`},
		{"[SIP]\nServer = pbx:99999\n[PBX]\nWatch = dialog\n",
			`Presence.ini:2: [SIP] Server = "pbx:99999": port "99999" is not a number from 1 to 65535; use host:port, e.g. pbx.example.com:5060`},
		{"[SIP]\nOutboundProxy = 10.0.0.1\n[PBX]\nWatch = both\n",
			`Presence.ini:2: [SIP] OutboundProxy is set but Server is not, so nothing is sent over SIP; set Server = <host:port of the PBX's presence server>`},
	}
	for _, tc := range cases {
		_, err := Load(writeINI(t, t.TempDir(), []byte(tc.ini+minimal)))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.ini, err, tc.want)
		}
	}
}

// TestPBXDeviceCodeWarning: a Watch that writes to Teams while accounts sign in
// with the device code warns (the PBX's state still reaches the targets), with
// the fix; nothing is said where nothing would be written.
func TestPBXDeviceCodeWarning(t *testing.T) {
	const fix = "; a device-code account can read but not write other users' presence, so %s; " +
		"use an app registration with a client secret or certificate (Auth = secret or certificate) and the application permission Presence.ReadWrite.All with admin consent"
	const secretAccount = "[Account.app]\nTenantID = contoso.onmicrosoft.com\nClientID = 22222222-2222-3333-4444-555555555555\nAuth = secret\nClientSecret = enc:v1:x\n"
	dir := t.TempDir()
	cases := []struct{ name, ini, want string }{
		{"the one account", withSIP + "[PBX]\nWatch = dialog\n" + minimal,
			`Presence.ini:4: [PBX] Watch = dialog, but every account signs in with the device code (Auth = devicecode)` + strings.Replace(fix, "%s", "calls on the PBX will not show in Teams", 1)},
		{"two of three", withSIP + "[PBX]\nWatch = both\n" + minimal + "[Account.eu]\nTenantID = contoso.onmicrosoft.com\nClientID = 33333333-2222-3333-4444-555555555555\nDomains = contoso.de\nAuth = devicecode\n" +
			"[Account.app]\nTenantID = fabrikam.onmicrosoft.com\nClientID = 22222222-2222-3333-4444-555555555555\nDomains = fabrikam.com\nAuth = certificate\nCertificateFile = app.pem\n",
			`Presence.ini:4: [PBX] Watch = both, but [Account.main] and [Account.eu] sign in with the device code (Auth = devicecode)` + strings.Replace(fix, "%s", "the calls of their users will not show in Teams", 1)},
		{"one of two", withSIP + "[PBX]\nWatch = dialog\n" + minimal + "Domains = contoso.de\n" + strings.Replace(secretAccount, "enc:v1:x", "plain", 1),
			`Presence.ini:4: [PBX] Watch = dialog, but [Account.main] signs in with the device code (Auth = devicecode)` + strings.Replace(fix, "%s", "the calls of its users will not show in Teams", 1)},
		{"only app accounts", withSIP + "[PBX]\nWatch = dialog\n" + strings.Replace(secretAccount, "enc:v1:x", "plain", 1), ""},
		{"nothing written", withSIP + "[PBX]\nWatch = dialog\nInCall = off\n" + minimal, ""},
		{"watch off", withSIP + "[PBX]\nWatch = off\n" + minimal, ""},
		{"no account", "MSTeamsPresence.Enable = 0\n" + withSIP + "[PBX]\nWatch = dialog\n", ""},
	}
	if err := os.WriteFile(dir+"/app.pem", []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(writeINI(t, dir, []byte(tc.ini)))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range c.Warnings {
				if !strings.Contains(w, "is plain text") {
					got = append(got, w)
				}
			}
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("warnings %q, want none", got)
			case tc.want != "" && (len(got) != 1 || got[0] != tc.want):
				t.Errorf("warnings:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPBXRedacted(t *testing.T) {
	if red := mustLoad(t, minimal).Redacted(); !strings.HasSuffix(red, "\n[PBX]\nWatch = off\nSubscribeExpires = 1h\nSubscribeRate = 50\nListen =\nWatchURI =\n"+
		"InCall = Busy/InACall\nRinging = off\nDND = off\nAway = off\nTeamsExpiration = 5m\n") {
		t.Errorf("Redacted does not end with the default [PBX]:\n%s", red)
	}
	c := mustLoad(t, withSIP+"[PBX]\nWatch = both\nSubscribeExpires = 90m\nSubscribeRate = 2.5\nListen = 10.0.0.5:5070\nWatchURI = sip:watch-{extension}@{domain}\n"+
		"InCall = busy, inaconferencecall\nRinging = Available/Available\nDND = DoNotDisturb/Presenting\nAway = away/away\nTeamsExpiration = 15m\n"+minimal)
	want := "\n[PBX]\nWatch = both\nSubscribeExpires = 1h30m\nSubscribeRate = 2.5\nListen = 10.0.0.5:5070\nWatchURI = sip:watch-{extension}@{domain}\n" +
		"InCall = Busy/InAConferenceCall\nRinging = Available/Available\nDND = DoNotDisturb/Presenting\nAway = Away/Away\nTeamsExpiration = 15m\n"
	red := c.Redacted()
	if !strings.HasSuffix(red, want) {
		t.Errorf("Redacted:\n%s\nwant it to end with%s", red, want)
	}
	// What Redacted prints loads back to the same configuration.
	back := mustLoad(t, withSIP+red[strings.Index(red, "\n[PBX]\n"):]+minimal)
	if !reflect.DeepEqual(back.PBX, c.PBX) {
		t.Errorf("Redacted loads back as %+v %+v, want %+v %+v", back.PBX.Watch, back.PBX.Write, c.PBX.Watch, c.PBX.Write)
	}
}

// `config set PBX.Watch=dialog`: written in place when the result loads,
// refused with the reason when it would not.
func TestSetPBX(t *testing.T) {
	path := writeINI(t, t.TempDir(), []byte(minimal))
	err := Set(path, []Setting{{"PBX.Watch", "dialog"}})
	if err == nil || !strings.Contains(err.Error(), "not written: Presence.ini:6: [PBX] Watch = \"dialog\": watching needs the PBX's SIP server: set [SIP] Server") {
		t.Fatalf("Set without [SIP] Server = %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != minimal {
		t.Fatalf("a refused Set changed the file:\n%s", raw)
	}
	if err := Set(path, []Setting{{"SIP.Server", "pbx.example.com"}, {"pbx.watch", "dialog"}, {"PBX.InCall", "Busy, InAConferenceCall"}, {"PBX.Ringing", "off"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if want := minimal + "\n[SIP]\nServer = pbx.example.com\n\n[PBX]\nWatch = dialog\nInCall = Busy, InAConferenceCall\nRinging = off\n"; string(raw) != want {
		t.Fatalf("got\n%s\nwant\n%s", raw, want)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.PBX.Watch.Watch != watch.Dialog || pairString(c.PBX.Write.InCall) != "Busy/InAConferenceCall" || c.PBX.Write.Ringing != nil {
		t.Errorf("loaded %+v %+v", c.PBX.Watch, c.PBX.Write)
	}
	err = Set(path, []Setting{{"PBX.TeamsExpiration", "5h"}})
	if err == nil || !strings.Contains(err.Error(), `[PBX] TeamsExpiration = "5h": too long; use 5m to 4h`) {
		t.Errorf("Set of a TeamsExpiration out of range = %v", err)
	}
	if err := Set(path, []Setting{{"PBX.Expires", "1h"}}); err == nil || !strings.Contains(err.Error(), `did you mean "SubscribeExpires"?`) {
		t.Errorf("Set of an unknown key = %v", err)
	}
}
