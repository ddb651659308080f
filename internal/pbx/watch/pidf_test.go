package watch

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
)

// TestParsePIDFTestdata reads NOTIFY bodies captured from Asterisk 22 and
// Kamailio 5.6 and vendor-style ones (testdata/README.md says which is which),
// and the state each gives.
func TestParsePIDFTestdata(t *testing.T) {
	idle := presence.PBXState{Line: presence.LineIdle}
	for _, tc := range []struct {
		file  string
		want  PIDFState
		state presence.PBXState
	}{
		{"asterisk22-ready.xml", PIDFState{Entity: "sip:1001@127.0.0.1:5392", Tuples: 1, Persons: 1, Basic: "open", Notes: []string{"Ready"}}, idle},
		// Asterisk sends on-the-phone while the line rings; its note tells.
		{"asterisk22-ringing.xml", PIDFState{Entity: "sip:1001@127.0.0.1:5392", Tuples: 1, Persons: 1, Basic: "open",
			Activities: []string{"on-the-phone"}, Notes: []string{"Ringing"}}, presence.PBXState{Line: presence.LineRinging}},
		{"asterisk22-on-the-phone.xml", PIDFState{Entity: "sip:1001@127.0.0.1:5392", Tuples: 1, Persons: 1, Basic: "open",
			Activities: []string{"on-the-phone"}, Notes: []string{"On the phone"}}, presence.PBXState{Line: presence.LineInCall}},
		{"asterisk22-on-hold.xml", PIDFState{Entity: "sip:2000@127.0.0.1:5392", Tuples: 1, Persons: 1, Basic: "open",
			Activities: []string{"on-the-phone"}, Notes: []string{"On hold"}}, presence.PBXState{Line: presence.LineInCall}},
		// An unregistered phone: closed, and no call.
		{"asterisk22-unavailable.xml", PIDFState{Entity: "sip:2000@127.0.0.1:5392", Tuples: 1, Persons: 1, Basic: "closed",
			Notes: []string{"Unavailable"}}, idle},
		// Kamailio's presence_xml with only presencebridge's publication: nothing
		// of the PBX's own.
		{"kamailio56-own-only.xml", PIDFState{Entity: "sip:1002@pbx.example", Own: 2}, presence.PBXState{}},
		// ... and with a phone's publication merged in: the phone's says on the
		// phone; ours (tuple "teams", person "p1", a meeting) is left out.
		{"kamailio56-merged.xml", PIDFState{Entity: "sip:1002@pbx.example", Tuples: 1, Persons: 1, Own: 2, Basic: "open",
			Activities: []string{"on-the-phone"}}, presence.PBXState{Line: presence.LineInCall}},
		{"cisco-style-dnd.xml", PIDFState{Entity: "sip:2001@10.20.0.5", Tuples: 1, Persons: 1, Basic: "open",
			Activities: []string{"dnd"}}, presence.PBXState{Line: presence.LineIdle, DND: true}},
		{"yealink-style-on-the-phone.xml", PIDFState{Entity: "sip:1003@10.20.0.5", Tuples: 1, Basic: "open",
			Activities: []string{"on-the-phone"}, Notes: []string{"Talking"}}, presence.PBXState{Line: presence.LineInCall}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParsePIDF(readTestdata(t, "pidf", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("read\n%+v\nwant\n%+v", got, tc.want)
			}
			if st := got.State(); !st.SameAs(tc.state) || st.Known() != tc.state.Known() {
				t.Fatalf("state %+v, want %+v", st, tc.state)
			}
		})
	}
}

// TestParsePIDFOwnPublication: whatever presencebridge publishes (internal/pbx/sip.PIDF),
// read back from the presence server alone or merged with a phone's, is not the
// PBX's state.
func TestParsePIDFOwnPublication(t *testing.T) {
	const entity = "sip:1002@pbx.example"
	phone := `<tuple id="t4109"><status><basic>open</basic></status></tuple>` +
		`<dm:person id="p4159"><rpid:activities><rpid:away/></rpid:activities></dm:person>`
	for _, m := range []presence.Mapped{
		{Basic: "open", Activity: "on-the-phone", Note: "In a call"},
		{Basic: "closed", Activity: "busy", Note: "Do not disturb"},
		{Basic: "open", Activity: "away", Note: "Away"},
		{Basic: "open"},
		{Basic: "closed", Activity: "focusing", Note: "Focusing"}, // <rpid:other>
	} {
		ours := string(sip.PIDF(entity, m))
		got, err := ParsePIDF([]byte(ours))
		if err != nil {
			t.Fatal(err)
		}
		if got.Own != 2 || got.Tuples+got.Persons != 0 || got.State().Known() {
			t.Fatalf("our own %v read as %+v, state %+v:\n%s", m, got, got.State(), ours)
		}
		// Merged as Kamailio's presence_xml does: the phone's elements appended.
		merged := strings.Replace(ours, "</presence>", phone+"</presence>", 1)
		got, err = ParsePIDF([]byte(merged))
		if err != nil {
			t.Fatal(err)
		}
		want := presence.PBXState{Line: presence.LineIdle, Away: true}
		if got.Own != 2 || got.Tuples != 1 || got.Persons != 1 || !got.State().SameAs(want) {
			t.Fatalf("our own %v merged with a phone's read as %+v, state %+v", m, got, got.State())
		}
	}
}

// TestParsePIDFWhoseIsWhat: which tuples and persons are presencebridge's.
func TestParsePIDFWhoseIsWhat(t *testing.T) {
	doc := func(inner string) []byte {
		return []byte(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@b">` + inner + `</presence>`)
	}
	onPhone := `<rpid:activities><rpid:on-the-phone/></rpid:activities>`
	for _, tc := range []struct {
		name           string
		inner          string
		tuples, people int
		own            int
		line           presence.Line
	}{
		{"a phone's p1, no teams tuple: the phone's", `<tuple id="x"><status><basic>open</basic></status></tuple><dm:person id="p1">` + onPhone + `</dm:person>`, 1, 1, 0, presence.LineInCall},
		{"p1 beside our teams tuple: ours", `<tuple id="teams"/><dm:person id="p1">` + onPhone + `</dm:person><tuple id="x"/>`, 1, 0, 2, presence.LineIdle},
		{"p1 before our teams tuple: ours", `<dm:person id="p1">` + onPhone + `</dm:person><tuple id="teams"/>`, 0, 0, 2, presence.LineUnknown},
		{"presencebridge ids", `<tuple id="presencebridge"/><tuple id="presencebridge-2"><status>` + onPhone + `</status></tuple><dm:person id="presencebridge-p">` + onPhone + `</dm:person>`, 0, 0, 3, presence.LineUnknown},
		{"ids are case-sensitive", `<tuple id="Teams"/><dm:person id="PresenceBridge">` + onPhone + `</dm:person>`, 1, 1, 0, presence.LineInCall},
		{"a person named teams is not our tuple", `<dm:person id="teams">` + onPhone + `</dm:person>`, 0, 1, 0, presence.LineInCall},
		{"no tuples nor persons", `<note>Hello</note>` + onPhone, 0, 0, 0, presence.LineUnknown},
		{"devices are not tuples nor persons", `<dm:device id="d1"><dm:deviceID>urn:x</dm:deviceID></dm:device>`, 0, 0, 0, presence.LineUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePIDF(doc(tc.inner))
			if err != nil {
				t.Fatal(err)
			}
			if got.Tuples != tc.tuples || got.Persons != tc.people || got.Own != tc.own || got.State().Line != tc.line {
				t.Fatalf("read %+v, line %q; want %d tuples, %d persons, %d own, line %q", got, got.State().Line, tc.tuples, tc.people, tc.own, tc.line)
			}
		})
	}
}

// TestPIDFState: the mapping of what is kept to the PBX's state.
func TestPIDFState(t *testing.T) {
	doc := func(inner string) []byte {
		return []byte(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@b">` + inner + `</presence>`)
	}
	person := func(acts ...string) string {
		s := `<dm:person id="p"><rpid:activities>`
		for _, a := range acts {
			s += "<rpid:" + a + "/>"
		}
		return s + `</rpid:activities></dm:person>`
	}
	tuple := func(basic string) string {
		return `<tuple id="t"><status><basic>` + basic + `</basic></status></tuple>`
	}
	idle, ringing, incall := presence.LineIdle, presence.LineRinging, presence.LineInCall
	for _, tc := range []struct {
		name  string
		inner string
		want  presence.PBXState
	}{
		{"open, nothing else", tuple("open"), presence.PBXState{Line: idle}},
		{"closed, nothing else", tuple("closed"), presence.PBXState{Line: idle}},
		{"on the phone", tuple("open") + person("on-the-phone"), presence.PBXState{Line: incall}},
		{"on the phone, closed (Asterisk BUSY style)", tuple("closed") + person("on-the-phone"), presence.PBXState{Line: incall}},
		{"busy", tuple("closed") + person("busy"), presence.PBXState{Line: idle, DND: true}},
		{"dnd (not RFC 4480)", tuple("open") + person("dnd"), presence.PBXState{Line: idle, DND: true}},
		{"do-not-disturb (not RFC 4480)", tuple("open") + person("do-not-disturb"), presence.PBXState{Line: idle, DND: true}},
		{"busy on the phone", tuple("open") + person("busy", "on-the-phone"), presence.PBXState{Line: incall, DND: true}},
		{"away", tuple("open") + person("away"), presence.PBXState{Line: idle, Away: true}},
		{"vacation", person("vacation"), presence.PBXState{Line: idle, Away: true}},
		{"holiday", person("holiday"), presence.PBXState{Line: idle, Away: true}},
		{"away but on the phone: the call", tuple("open") + person("away", "on-the-phone"), presence.PBXState{Line: incall}},
		{"a meeting says nothing more", tuple("open") + person("meeting"), presence.PBXState{Line: idle}},
		{"unknown activity", tuple("open") + person("unknown"), presence.PBXState{Line: idle}},
		{"RPID other", tuple("open") + `<dm:person id="p"><rpid:activities><rpid:other>Lunch</rpid:other></rpid:activities></dm:person>`, presence.PBXState{Line: idle}},
		{"Asterisk's Ringing note", `<note>Ringing</note>` + tuple("open") + person("on-the-phone"), presence.PBXState{Line: ringing}},
		{"a Ringing note alone is no call", `<note>ringing</note>` + tuple("open"), presence.PBXState{Line: idle}},
		{"activities in the tuple status (older RPID)", `<tuple id="t"><status><basic>open</basic><rpid:activities><rpid:busy/></rpid:activities></status></tuple>`, presence.PBXState{Line: idle, DND: true}},
		{"activity case", tuple("open") + `<dm:person id="p"><rpid:activities><rpid:On-The-Phone/></rpid:activities></dm:person>`, presence.PBXState{Line: incall}},
		{"nothing", ``, presence.PBXState{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePIDF(doc(tc.inner))
			if err != nil {
				t.Fatal(err)
			}
			if st := got.State(); !st.SameAs(tc.want) || st.Known() != tc.want.Known() {
				t.Fatalf("state %+v from %+v, want %+v", st, got, tc.want)
			}
		})
	}
}

// TestParsePIDFTolerates: what PBXs vary, read the same.
func TestParsePIDFTolerates(t *testing.T) {
	want := PIDFState{Entity: "sip:a@b", Tuples: 2, Persons: 1, Basic: "open", Activities: []string{"on-the-phone", "busy"}, Notes: []string{"top", "On the phone", "x"}}
	for name, body := range map[string]string{
		"prefixed": `<?xml version="1.0" encoding="UTF-8"?><p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:d="urn:ietf:params:xml:ns:pidf:data-model" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@b">` +
			`<p:note>top</p:note><p:tuple id="1"><p:status><p:basic> CLOSED </p:basic></p:status><p:note>On the phone</p:note></p:tuple>` +
			`<p:tuple id="2"><p:status><p:basic>open</p:basic></p:status><p:contact priority="0.5">sip:a@10.0.0.1</p:contact><p:timestamp>2025-01-01T00:00:00Z</p:timestamp></p:tuple>` +
			`<d:person id="p"><r:activities><r:on-the-phone/><r:busy/><r:on-the-phone/></r:activities><d:note>x</d:note><d:note>  </d:note></d:person></p:presence>`,
		"no namespace, white space, unknown elements": "\n<presence entity=\"sip:a@b\">\n <note>\n top \n</note>\n" +
			" <tuple id=\"1\"><status><basic>closed</basic><x:y xmlns:x=\"urn:x\"><basic>open</basic></x:y></status><note>On the phone</note></tuple>\n" +
			" <tuple id=\"2\"><status><basic>open</basic></status><note/></tuple>\n" +
			" <person id=\"p\"><activities><on-the-phone><busy/></on-the-phone><busy/></activities><note>x</note><activities><on-the-phone/></activities></person>\n" +
			" <device id=\"d\"><note>device note</note><activities><away/></activities></device>\n</presence>\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePIDF([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("read\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestParsePIDFRefuses(t *testing.T) {
	many := `<presence>` + strings.Repeat(`<tuple id="x"/>`, MaxElements) + `<person id="y"/></presence>`
	for _, tc := range []struct{ body, msg string }{
		{"open", `pidf: text "open" outside the root element: not an XML document`},
		{`<dialog-info version="1" state="full"/>`, `pidf: the root element is <dialog-info>, not <presence> (RFC 3863)`},
		{`<presence><tuple id="a">`, `pidf: the document ends before its root element does`},
		{`<presence></tuple></presence>`, `pidf: not XML: XML syntax error on line 1: element <presence> closed by </tuple>`},
		{`<presence/><presence/>`, `pidf: a second root element <presence>`},
		{many, `pidf: more than 256 tuples and persons`},
		{`<presence>` + strings.Repeat(" ", MaxBodySize) + `</presence>`, `pidf body of 65557 bytes: over the 65536-byte limit`},
	} {
		if _, err := ParsePIDF([]byte(tc.body)); err == nil || err.Error() != tc.msg {
			t.Errorf("%.60s:\n error %v\n want  %s", tc.body, err, tc.msg)
		}
	}
	if s, err := ParsePIDF([]byte(`<presence>` + strings.Repeat(`<tuple id="x"/>`, MaxElements) + `</presence>`)); err != nil || s.Tuples != MaxElements {
		t.Errorf("%d tuples: %+v, %v", MaxElements, s, err)
	}
	if _, err := ParsePIDF([]byte("\r\n")); !errors.Is(err, ErrNoBody) {
		t.Errorf("an empty body: %v, want ErrNoBody", err)
	}
	notes := `<presence><tuple id="t"/>` + strings.Repeat(`<note>n</note>`, 40) + `</presence>`
	if s, err := ParsePIDF([]byte(notes)); err != nil || len(s.Notes) != maxNotes {
		t.Errorf("40 notes: %d kept, %v", len(s.Notes), err)
	}
}

// BenchmarkParsePIDF parses Kamailio's merged document (a phone's publication
// and presencebridge's, 821 bytes).
func BenchmarkParsePIDF(b *testing.B) {
	body := readTestdata(b, "pidf", "kamailio56-merged.xml")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePIDF(body); err != nil {
			b.Fatal(err)
		}
	}
}
