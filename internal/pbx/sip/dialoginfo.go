package sip

import (
	"bytes"
	"encoding/xml"
	"strconv"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// DialogID is the id of the one <dialog> a dialog-info document of
// presencebridge holds. It starts with "presencebridge" (watch.OwnIDPrefix),
// so presencebridge's own PBX watch, subscribed to the same user at the same
// server, leaves it out and never reads a Teams call back as a PBX call.
const DialogID = "presencebridge-teams"

// DialogInfo renders what m shows on a BLF key (m.DialogState()) as an
// application/dialog-info+xml document (RFC 4235) for entity, with the given
// version, full state:
//
//   - confirmed (the key lit, busy): one dialog, direction initiator, with the
//     user as local identity and target, which phones show;
//   - early (the key blinking, ringing): the same, direction recipient;
//   - terminated (idle): no dialog at all. A full document without dialogs is
//     RFC 4235's "no dialogs in progress"; Kamailio 5.6's presence_dialoginfo
//     notifies it as an empty <dialog-info/>, which phones show idle. A
//     published <state>terminated</state> would be worse: Kamailio then skips
//     every later update of the publication ("Trying to update an already
//     terminated state"), so the key could never light again until it lapsed.
//
// Text is XML-escaped.
func DialogInfo(entity string, version uint64, m presence.Mapped) []byte {
	var b bytes.Buffer
	esc := func(s string) { _ = xml.EscapeText(&b, []byte(s)) }
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="`)
	b.WriteString(strconv.FormatUint(version, 10))
	b.WriteString(`" state="full" entity="`)
	esc(entity)
	b.WriteString(`">` + "\n")
	state, direction := m.DialogState(), "initiator"
	switch state {
	case "confirmed":
	case "early":
		direction = "recipient"
	default:
		b.WriteString("</dialog-info>\n")
		return b.Bytes()
	}
	b.WriteString(`<dialog id="` + DialogID + `" direction="` + direction + `"><state>` + state + `</state>`)
	b.WriteString(`<local><identity>`)
	esc(entity)
	b.WriteString(`</identity><target uri="`)
	esc(entity)
	b.WriteString(`"/></local></dialog>` + "\n</dialog-info>\n")
	return b.Bytes()
}
