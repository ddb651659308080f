package kamailio

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// The fuzz targets cover what the watcher reads from a presence server: NOTIFY
// requests (headers and the PIDF body) and the answers to its SUBSCRIBEs.
// `make test` runs their seeds; `make fuzz` explores from them.

func notify(headers, body string) string {
	return "NOTIFY sip:watcher@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.1\r\n" +
		"From: <sip:alice@pbx.example>;tag=k1\r\nTo: <sip:watcher@127.0.0.1>;tag=w1\r\nCall-ID: c1@watcher\r\n" +
		"CSeq: 2 NOTIFY\r\nEvent: presence\r\n" + headers + "Content-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body
}

// FuzzNotify reads any text as a NOTIFY or a SUBSCRIBE answer: no panic, the
// body is what follows the first blank line, the state read is trimmed text
// from the body, activities are element names, header values are trimmed, and a
// granted Expires gives a positive refresh period.
func FuzzNotify(f *testing.F) {
	for _, s := range []string{
		notify("Subscription-State: active;expires=600\r\nContent-Type: application/pidf+xml\r\n", fmt.Sprintf(pidfInACall, "sip:alice@pbx.example")),
		notify("Subscription-State: active;expires=600\r\n", string(sip.PIDF("sip:alice@pbx.example", presence.Mapped{Basic: "open", Activity: "meeting", Note: "In a meeting"}))),
		notify("Subscription-State: terminated;reason=timeout\r\n", ""),
		notify("o: presence\r\nv: SIP/2.0/UDP 10.0.0.1\r\n", "<presence><tuple><status><basic> closed </basic></status></tuple></presence>"),
		notify("", "<presence><tuple><status><basic>open"),                                                  // truncated
		notify("", "<presence><note>a</note><note>b</note><activities><a/><b></b></activities></presence>"), // odd nesting
		notify("", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><presence><note>M\xfcller</note></presence>"),
		notify("", "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\">]><presence><note>&a;&a;&a;</note></presence>"),
		notify("", "<presence><note><![CDATA[ raw <note> ]]></note></presence>"),
		notify("", "</note></presence>"),
		"NOTIFY sip:w SIP/2.0\nSubscription-State: active\n\n<presence/>", // LF only
		"NOTIFY sip:w SIP/2.0\r\n",
		"SIP/2.0 200 OK\r\nCSeq: 1 SUBSCRIBE\r\nTo: <sip:alice@pbx.example>;tag=abc\r\nExpires: 600\r\n\r\n",
		"SIP/2.0 202 Accepted\r\nCSeq: 1 SUBSCRIBE\r\nt: <sip:alice@pbx.example>;TAG=x;tag=y\r\nExpires: 9223372037\r\n\r\n",
		"SIP/2.0 200 OK\r\nCSeq: 1 SUBSCRIBE\r\nExpires: -600\r\n\r\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n := parseNotify(raw)
		if _, body, ok := strings.Cut(raw, "\r\n\r\n"); (ok && n.Raw != body) || (!ok && n.Raw != "") {
			t.Fatalf("body %q read from %q", n.Raw, raw)
		}
		if n.Basic != strings.TrimSpace(n.Basic) || n.Note != strings.TrimSpace(n.Note) {
			t.Fatalf("basic %q or note %q not trimmed", n.Basic, n.Note)
		}
		// XML reads CRLF and CR as LF, and & starts a reference: otherwise the
		// text read is the body's.
		if lf := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(n.Raw); !strings.Contains(lf, n.Basic) && !strings.Contains(n.Raw, "&") {
			t.Fatalf("basic %q is not in the body %q", n.Basic, n.Raw)
		}
		for _, a := range n.Activities {
			if a == "" || strings.ContainsAny(a, " <>/\t\r\n") {
				t.Fatalf("activity %q is not an element name", a)
			}
		}
		for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq", "Expires", "Subscription-State"} {
			for _, v := range headers(raw, name) {
				if v != strings.TrimSpace(v) || strings.ContainsAny(v, "\r\n") {
					t.Fatalf("%s value %q", name, v)
				}
			}
		}
		e := grantedExpires(raw, 600)
		if e < 0 || e > 1<<32-1 || time.Duration(max(e, 2))*time.Second/2 <= 0 {
			t.Fatalf("Expires %q granted as %d", header(raw, "Expires"), e)
		}
		_ = param(header(raw, "To"), "tag")
	})
}

// FuzzNotifyPIDF: a state presencebridge publishes (sip.PIDF) and Kamailio
// passes on in a NOTIFY reads back the same in the watcher: basic, RPID
// activity and note.
func FuzzNotifyPIDF(f *testing.F) {
	for _, s := range [][4]string{
		{"sip:1001@pbx.example", "open", "on-the-phone", "In a call"},
		{"sip:1001@pbx.example", "closed", "", "Off work"},
		{"sip:1001@pbx.example", "open", "focusing", " Focusing  "},
		{"sip:1001@pbx.example", "open", "busy", "R&D <meeting> \"room 4\""},
		{"sip:1001@pbx.example", "", "away", "\x00\ufffe\t"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, entity, basic, activity, note string) {
		m := presence.Mapped{State: "busy", Basic: basic, Activity: activity, Note: note}
		n := parseNotify(notify("Subscription-State: active;expires=600\r\n", string(sip.PIDF(entity, m))))
		wantBasic := "closed"
		if basic == "open" {
			wantBasic = "open"
		}
		var wantActs []string
		switch {
		case activity == "":
		case slices.Contains(presence.RPIDActivities, activity):
			wantActs = []string{activity}
		default:
			wantActs = []string{"other"}
		}
		if n.Basic != wantBasic || !slices.Equal(n.Activities, wantActs) || n.Note != strings.TrimSpace(xmlText(note)) {
			t.Fatalf("read back basic %q activities %v note %q; want %q %v %q", n.Basic, n.Activities, n.Note,
				wantBasic, wantActs, strings.TrimSpace(xmlText(note)))
		}
	})
}

// xmlText is s as it reads back from XML text written by encoding/xml: each
// byte of invalid UTF-8 and each character XML 1.0 does not allow is U+FFFD.
func xmlText(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		ok := r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
		if !ok || r == utf8.RuneError && n == 1 {
			r = '\uFFFD'
		}
		b.WriteRune(r)
		s = s[n:]
	}
	return b.String()
}
