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
			Any []struct{ XMLName xml.Name } `xml:",any"`
		} `xml:"urn:ietf:params:xml:ns:pidf:rpid activities"`
		Note string `xml:"urn:ietf:params:xml:ns:pidf:data-model note"`
	} `xml:"urn:ietf:params:xml:ns:pidf:data-model person"`
}

func TestPIDF(t *testing.T) {
	cases := []struct {
		m        presence.Mapped
		activity string
	}{
		{presence.Mapped{State: "oncall", Basic: "open", Activity: "on-the-phone", Note: `In a call <with> "R&D"`}, "on-the-phone"},
		{presence.Mapped{State: "offline", Basic: "closed", Note: "Off work"}, ""},
	}
	for _, c := range cases {
		raw := PIDF("sip:1001@pbx.example", c.m)
		var d pidfDoc
		if err := xml.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v\n%s", c.m, err, raw)
		}
		if d.Entity != "sip:1001@pbx.example" || d.Tuple.Basic != c.m.Basic || d.Tuple.Note != c.m.Note || d.Person.Note != c.m.Note {
			t.Errorf("parsed %+v from\n%s", d, raw)
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
