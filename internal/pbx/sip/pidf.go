package sip

import (
	"bytes"
	"encoding/xml"
	"slices"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// PIDF renders m as an application/pidf+xml document (RFC 3863) for entity: one
// tuple with basic open or closed (anything but "open" is closed), the RPID
// activity (RFC 4480) in a data-model person element (RFC 4479), and the note in
// both the tuple and the person, where phones look for it. Text is XML-escaped.
func PIDF(entity string, m presence.Mapped) []byte {
	var b bytes.Buffer
	esc := func(s string) { _ = xml.EscapeText(&b, []byte(s)) }
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="`)
	esc(entity)
	b.WriteString(`">` + "\n")
	b.WriteString(`<tuple id="teams"><status><basic>`)
	if m.Basic == "open" {
		b.WriteString("open")
	} else {
		b.WriteString("closed") // the only other value RFC 3863 allows
	}
	b.WriteString(`</basic></status>`)
	if m.Note != "" {
		b.WriteString(`<note xml:lang="en">`)
		esc(m.Note)
		b.WriteString(`</note>`)
	}
	b.WriteString("</tuple>\n")
	b.WriteString(`<dm:person id="p1">`)
	switch {
	case m.Activity == "":
	case slices.Contains(presence.RPIDActivities, m.Activity):
		b.WriteString(`<rpid:activities><rpid:`)
		b.WriteString(m.Activity)
		b.WriteString(`/></rpid:activities>`)
	default:
		// Not an RFC 4480 element name (presence.ParseMapped refuses those, but an
		// item may come from an older outbox): RFC 4480 section 3.2's <other>.
		b.WriteString(`<rpid:activities><rpid:other>`)
		esc(m.Activity)
		b.WriteString(`</rpid:other></rpid:activities>`)
	}
	if m.Note != "" {
		b.WriteString(`<dm:note xml:lang="en">`)
		esc(m.Note)
		b.WriteString(`</dm:note>`)
	}
	b.WriteString("</dm:person>\n</presence>\n")
	return b.Bytes()
}
