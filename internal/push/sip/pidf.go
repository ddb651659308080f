package sip

import (
	"bytes"
	"encoding/xml"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// PIDF renders m as an application/pidf+xml document (RFC 3863) for entity, with
// the RPID activity (RFC 4480) in a data-model person element (RFC 4479) and the
// note in both the tuple and the person, where phones look for it.
func PIDF(entity string, m presence.Mapped) []byte {
	var b bytes.Buffer
	esc := func(s string) { _ = xml.EscapeText(&b, []byte(s)) }
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="`)
	esc(entity)
	b.WriteString(`">` + "\n")
	b.WriteString(`<tuple id="teams"><status><basic>`)
	esc(m.Basic)
	b.WriteString(`</basic></status>`)
	if m.Note != "" {
		b.WriteString(`<note xml:lang="en">`)
		esc(m.Note)
		b.WriteString(`</note>`)
	}
	b.WriteString("</tuple>\n")
	b.WriteString(`<dm:person id="p1">`)
	if m.Activity != "" {
		b.WriteString(`<rpid:activities><rpid:`)
		b.WriteString(m.Activity) // checked against RFC 4480's names by presence.ParseMapped
		b.WriteString(`/></rpid:activities>`)
	}
	if m.Note != "" {
		b.WriteString(`<dm:note xml:lang="en">`)
		esc(m.Note)
		b.WriteString(`</dm:note>`)
	}
	b.WriteString("</dm:person>\n</presence>\n")
	return b.Bytes()
}
