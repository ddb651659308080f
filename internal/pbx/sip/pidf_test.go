package sip

import (
	"encoding/xml"
	"testing"

	"github.com/presencebridge/presencebridge/internal/presence"
)

type pidfDoc struct {
	XMLName xml.Name `xml:"urn:ietf:params:xml:ns:pidf presence"`
	Entity  string   `xml:"entity,attr"`
	Tuple   struct {
		ID    string `xml:"id,attr"`
		Basic string `xml:"status>basic"`
		Note  string `xml:"note"`
	} `xml:"tuple"`
	Person struct {
		Activities struct {
			Any   []struct{ XMLName xml.Name } `xml:",any"`
			Other string                       `xml:"urn:ietf:params:xml:ns:pidf:rpid other"`
		} `xml:"urn:ietf:params:xml:ns:pidf:rpid activities"`
		Note string `xml:"urn:ietf:params:xml:ns:pidf:data-model note"`
	} `xml:"urn:ietf:params:xml:ns:pidf:data-model person"`
}

func TestPIDF(t *testing.T) {
	cases := []struct {
		entity          string
		m               presence.Mapped
		basic, activity string
		other           string // text of <rpid:other>
	}{
		{"sip:1001@pbx.example", presence.Mapped{State: "oncall", Basic: "open", Activity: "on-the-phone", Note: `In a call <with> "R&D"`}, "open", "on-the-phone", ""},
		{"sip:1001@pbx.example", presence.Mapped{State: "offline", Basic: "closed", Note: "Off work"}, "closed", "", ""},
		{`sip:o'brien&co@pbx.example;x="<y>"`, presence.Mapped{State: "busy", Basic: "open", Activity: "meeting", Note: "In a meeting"}, "open", "meeting", ""},
		// Not from ParseMapped: a word RFC 4480 lacks, and an empty basic.
		{"sip:1001@pbx.example", presence.Mapped{State: "busy", Activity: `focus<ing>`, Note: "Focusing"}, "closed", "", "focus<ing>"},
	}
	for _, c := range cases {
		raw := PIDF(c.entity, c.m)
		var d pidfDoc
		if err := xml.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v\n%s", c.m, err, raw)
		}
		if d.Entity != c.entity || d.Tuple.Basic != c.basic || d.Tuple.Note != c.m.Note || d.Person.Note != c.m.Note {
			t.Errorf("parsed %+v from\n%s", d, raw)
		}
		if d.Person.Activities.Other != c.other {
			t.Errorf("<rpid:other> %q, want %q", d.Person.Activities.Other, c.other)
		}
		var acts []string
		for _, a := range d.Person.Activities.Any {
			if a.XMLName.Space != "urn:ietf:params:xml:ns:pidf:rpid" {
				t.Errorf("activity %v not in the RPID namespace", a.XMLName)
			}
			acts = append(acts, a.XMLName.Local)
		}
		if (c.activity == "" && len(acts) != 0) || (c.activity != "" && (len(acts) != 1 || acts[0] != c.activity)) {
			t.Errorf("activities %v, want %q", acts, c.activity)
		}
	}
}
