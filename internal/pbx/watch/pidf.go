package watch

import (
	"encoding/xml"
	"fmt"
	"slices"
	"strings"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// Bounds of a PIDF document (beside MaxBodySize).
const (
	// MaxElements is the most <tuple> and <person> elements one PIDF document
	// may carry, together.
	MaxElements = 256
	// maxNotes is how many notes a PIDFState keeps (the rest are dropped).
	maxNotes = 16
)

// What presencebridge's own PIDF publication (internal/pbx/sip.PIDF) carries:
// one tuple with id "teams" and one data-model person with id "p1". A presence
// server merges the publications of one user into one document (Kamailio 5.6's
// presence_xml appends every publication's tuples and persons to the first
// one's), so a watcher of the user reads them back beside the phone's.
const (
	ownTupleID  = "teams"
	ownPersonID = "p1"
)

// Asterisk's notes. Its PIDF (res_pjsip, checked with Asterisk 22.10) has the
// same <rpid:on-the-phone/> for a ringing line as for a call; only its note
// (the document's <note>, hard-coded English) tells them apart.
const asteriskRinging = "ringing"

// PIDFState is what a presence NOTIFY body (PIDF, RFC 3863, with RPID, RFC 4480,
// in data-model persons, RFC 4479) says of a user, with presencebridge's own
// tuples and persons left out: its tuples have id "teams" or one starting with
// OwnIDPrefix; its persons an id starting with OwnIDPrefix, or "p1" in a
// document that also has its "teams" tuple (what presencebridge publishes
// today: a phone's own "p1" person, with no "teams" tuple beside it, is kept).
type PIDFState struct {
	Entity  string // the entity attribute: the user's URI
	Tuples  int    // <tuple> elements kept
	Persons int    // <person> elements kept
	Own     int    // tuples and persons left out as presencebridge's own
	// Basic is "open" if a tuple kept is open, else "closed" if one is closed,
	// else "" (RFC 3863 allows no other value; others are ignored).
	Basic string
	// Activities are the RPID activities of the tuples and persons kept and of
	// the document itself: element names, lower-cased, each once, in document
	// order ("on-the-phone", "busy", "away", "other" for <rpid:other>, or a
	// vendor's own such as "dnd"). Found in any <activities> element, whatever
	// its namespace: RFC 4480 puts it in the person; older RPID drafts and some
	// phones put it in the tuple's <status>.
	Activities []string
	// Notes are the notes of the document itself and of what is kept, trimmed,
	// empty ones left out, at most 16.
	Notes []string
}

// State maps s to the PBX's state of the user (UPN and Changed left for the
// caller; Calls stays 0, since PIDF does not count calls):
//   - nothing kept (no tuple or person, or only presencebridge's own): the
//     zero state, LineUnknown: the PBX says nothing of the user;
//   - "on-the-phone": LineInCall; but LineRinging when a note is Asterisk's
//     "Ringing" (Asterisk says on-the-phone for a ringing line too, and a ringing
//     line is no call);
//   - "busy", "do-not-disturb" or "dnd" (neither is in RFC 4480, some PBXs send
//     them): DND, whatever the line;
//   - "away", "vacation" or "holiday": Away, when the line is idle;
//   - anything else kept, open or closed (a phone that is unregistered shows
//     closed: Asterisk's "Unavailable"): LineIdle.
//
// Other activities ("meeting", "appointment", ...) are kept in Activities but
// change nothing: PBXState has no place for them.
func (s PIDFState) State() presence.PBXState {
	if s.Tuples+s.Persons == 0 {
		return presence.PBXState{}
	}
	st := presence.PBXState{Line: presence.LineIdle}
	away := false
	for _, a := range s.Activities {
		switch a {
		case "on-the-phone":
			st.Line = presence.LineInCall
		case "busy", "do-not-disturb", "dnd":
			st.DND = true
		case "away", "vacation", "holiday":
			away = true
		}
	}
	if st.Line == presence.LineInCall && slices.ContainsFunc(s.Notes, func(n string) bool { return strings.EqualFold(n, asteriskRinging) }) {
		st.Line = presence.LineRinging
	}
	st.Away = away && st.Line == presence.LineIdle
	return st
}

// pidfElem is one <tuple> or <person> as read.
type pidfElem struct {
	person     bool
	id         string
	basic      string
	activities []string
	notes      []string
}

// pidfText is which text element is being read.
type pidfText int

const (
	noText pidfText = iota
	basicText
	noteText
)

// ParsePIDF reads a NOTIFY body of Event: presence. Like ParseDialogInfo it is
// tolerant of namespaces and prefixes (local names), white space, case and
// unknown elements (contact, timestamp, devices, Asterisk's and vendors'
// extensions), and strict on what matters: one XML document whose root is
// <presence>, at most MaxBodySize bytes and MaxElements tuples and persons. An
// empty body gives ErrNoBody.
func ParsePIDF(body []byte) (PIDFState, error) {
	const kind = "pidf"
	d, err := bodyDecoder(kind, body)
	if err != nil {
		return PIDFState{}, err
	}
	var (
		s         PIDFState
		elems     []pidfElem
		top       pidfElem // the document's own notes and activities
		cur       *pidfElem
		depth     int
		actDepth  int // depth of the <activities> element being read, 0 if none
		text      pidfText
		textDepth int
		buf       strings.Builder
	)
	for {
		tok, err := d.Token()
		if err != nil {
			return PIDFState{}, syntaxError(kind, err, depth)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			local := t.Name.Local
			owner := cur
			if owner == nil {
				owner = &top
			}
			switch {
			case depth == 0:
				if local != "presence" {
					return PIDFState{}, fmt.Errorf("%s: the root element is <%s>, not <presence> (RFC 3863)", kind, shortText(local))
				}
				s.Entity, _ = xmlAttr(t, "entity")
			case depth == 1 && (local == "tuple" || local == "person"):
				if len(elems) == MaxElements {
					return PIDFState{}, fmt.Errorf("%s: more than %d tuples and persons", kind, MaxElements)
				}
				id, _ := xmlAttr(t, "id")
				elems = append(elems, pidfElem{person: local == "person", id: id})
				cur = &elems[len(elems)-1]
			case actDepth > 0 && depth == actDepth:
				owner.activities = appendNew(owner.activities, strings.ToLower(local))
			case text != noText || actDepth > 0:
				// inside a text element, or deeper in an activity: nothing to read
			case local == "activities" && (cur != nil || depth == 1):
				actDepth = depth + 1
			case local == "basic" && cur != nil && !cur.person:
				text, textDepth = basicText, depth+1
				buf.Reset()
			case local == "note" && (cur != nil || depth == 1):
				text, textDepth = noteText, depth+1
				buf.Reset()
			}
			depth++
		case xml.EndElement:
			if depth == textDepth && text != noText {
				owner := cur
				if owner == nil {
					owner = &top
				}
				v := strings.TrimSpace(buf.String())
				switch text {
				case basicText:
					if b := strings.ToLower(v); b == "open" || b == "closed" {
						if owner.basic != "open" {
							owner.basic = b // one tuple open and closed: open
						}
					}
				case noteText:
					if v != "" && len(owner.notes) < maxNotes {
						owner.notes = append(owner.notes, v)
					}
				}
				text, textDepth = noText, 0
			}
			if depth == actDepth {
				actDepth = 0
			}
			depth--
			switch depth {
			case 0:
				if err := finishDoc(kind, d); err != nil {
					return PIDFState{}, err
				}
				return s.keep(top, elems), nil
			case 1:
				cur = nil
			}
		case xml.CharData:
			if text != noText && depth == textDepth {
				buf.Write(t)
			}
		}
		if depth == 0 {
			if err := outsideRoot(kind, tok, false); err != nil {
				return PIDFState{}, err
			}
		}
	}
}

// keep fills s from the document's own notes and activities and those of the
// tuples and persons that are not presencebridge's.
func (s PIDFState) keep(top pidfElem, elems []pidfElem) PIDFState {
	ours := slices.ContainsFunc(elems, func(e pidfElem) bool { return !e.person && e.id == ownTupleID })
	s.Activities = append(s.Activities, top.activities...)
	s.Notes = append(s.Notes, top.notes...)
	for _, e := range elems {
		own := strings.HasPrefix(e.id, OwnIDPrefix) ||
			!e.person && e.id == ownTupleID ||
			e.person && e.id == ownPersonID && ours
		if own {
			s.Own++
			continue
		}
		if e.person {
			s.Persons++
		} else {
			s.Tuples++
			if e.basic == "open" || e.basic == "closed" && s.Basic == "" {
				s.Basic = e.basic
			}
		}
		for _, a := range e.activities {
			s.Activities = appendNew(s.Activities, a)
		}
		for _, n := range e.notes {
			if len(s.Notes) < maxNotes {
				s.Notes = append(s.Notes, n)
			}
		}
	}
	return s
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
