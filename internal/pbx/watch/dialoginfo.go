package watch

import (
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// Dialog states (RFC 4235), as DialogElement.State holds them: lower-cased, since
// Kamailio's pua_dialoginfo sends "Trying".
const (
	DialogTrying     = "trying"
	DialogProceeding = "proceeding"
	DialogEarly      = "early"
	DialogConfirmed  = "confirmed"
	DialogTerminated = "terminated"
)

var dialogStates = []string{DialogTrying, DialogProceeding, DialogEarly, DialogConfirmed, DialogTerminated}

// DialogInfo is one application/dialog-info+xml document (RFC 4235), the body
// of an Event: dialog NOTIFY: what matters of it for a user's line.
type DialogInfo struct {
	Entity  string // the entity attribute: the user's URI
	Version uint64 // the version attribute (RFC 4235 section 4.1)
	Full    bool   // state="full"; false for state="partial"
	Dialogs []DialogElement
}

// DialogElement is one <dialog> element of a DialogInfo (named after the
// element: Dialog is the Watch value of settings.go).
type DialogElement struct {
	ID        string // the id attribute, as sent (required)
	CallID    string // call-id, local-tag, remote-tag: as sent, often absent
	LocalTag  string
	RemoteTag string
	Direction string // "initiator", "recipient" or "" (lower-cased)
	State     string // one of DialogTrying ... DialogTerminated
}

// Own reports whether d is a dialog presencebridge published itself (its id
// starts with OwnIDPrefix).
func (d DialogElement) Own() bool { return strings.HasPrefix(d.ID, OwnIDPrefix) }

// ParseDialogInfo reads a NOTIFY body of Event: dialog. It is tolerant of what
// PBXs add and vary: namespaces and prefixes (elements are matched by local
// name), white space, the case of the state, and any element or attribute it
// does not need (Asterisk's and Kamailio's <local>/<remote> identity and
// target, <param pname="+sip.rendering">, RFC 7463 shared-appearance elements,
// the event and code attributes of <state>, <duration>, <replaces>, ...). It is
// strict on what matters: the body must be one XML document whose root is
// <dialog-info> with a version that is a whole number (0 and up) and a state of
// "full" or "partial", every <dialog> must have an id and one of the five
// states, and the body is refused when over MaxBodySize bytes or MaxDialogs
// dialogs. An empty body gives ErrNoBody. A dialog id sent twice keeps the
// later one.
func ParseDialogInfo(body []byte) (DialogInfo, error) {
	const kind = "dialog-info"
	d, err := bodyDecoder(kind, body)
	if err != nil {
		return DialogInfo{}, err
	}
	var (
		info     DialogInfo
		depth    int
		cur      *DialogElement // the <dialog> being read
		count    int            // <dialog> elements seen
		inState  bool           // reading the text of cur's <state>
		gotState bool
		state    strings.Builder
		index    = map[string]int{} // dialog id -> its place in info.Dialogs
	)
	for {
		tok, err := d.Token()
		if err != nil {
			return DialogInfo{}, syntaxError(kind, err, depth)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch {
			case depth == 0:
				if t.Name.Local != "dialog-info" {
					return DialogInfo{}, fmt.Errorf("%s: the root element is <%s>, not <dialog-info> (RFC 4235)", kind, shortText(t.Name.Local))
				}
				if err := info.readRoot(t); err != nil {
					return DialogInfo{}, err
				}
			case depth == 1 && t.Name.Local == "dialog":
				if count++; count > MaxDialogs {
					return DialogInfo{}, fmt.Errorf("%s: more than %d dialogs", kind, MaxDialogs)
				}
				cur = &DialogElement{}
				cur.ID, _ = xmlAttr(t, "id")
				cur.CallID, _ = xmlAttr(t, "call-id")
				cur.LocalTag, _ = xmlAttr(t, "local-tag")
				cur.RemoteTag, _ = xmlAttr(t, "remote-tag")
				dir, _ := xmlAttr(t, "direction")
				cur.Direction = strings.ToLower(strings.TrimSpace(dir))
				gotState = false
			case depth == 2 && cur != nil && t.Name.Local == "state" && !gotState:
				inState = true
				state.Reset()
			}
			depth++
		case xml.EndElement:
			depth--
			switch {
			case depth == 0:
				if err := finishDoc(kind, d); err != nil {
					return DialogInfo{}, err
				}
				return info, nil
			case depth == 2 && inState:
				inState, gotState = false, true
				cur.State = strings.ToLower(strings.TrimSpace(state.String()))
			case depth == 1 && cur != nil:
				if err := cur.check(gotState); err != nil {
					return DialogInfo{}, err
				}
				if i, ok := index[cur.ID]; ok {
					info.Dialogs[i] = *cur
				} else {
					index[cur.ID] = len(info.Dialogs)
					info.Dialogs = append(info.Dialogs, *cur)
				}
				cur = nil
			}
		case xml.CharData:
			if inState && depth == 3 {
				state.Write(t)
			}
		}
		if depth == 0 {
			if err := outsideRoot(kind, tok, false); err != nil {
				return DialogInfo{}, err
			}
		}
	}
}

// readRoot reads the attributes of <dialog-info>.
func (info *DialogInfo) readRoot(root xml.StartElement) error {
	info.Entity, _ = xmlAttr(root, "entity")
	v, ok := xmlAttr(root, "version")
	if !ok {
		return errors.New("dialog-info: no version attribute (RFC 4235 section 4.1 requires one)")
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return fmt.Errorf("dialog-info: version %s is not a whole number from 0 up (RFC 4235 section 4.1)", quoteValue(v))
	}
	info.Version = n
	s, _ := xmlAttr(root, "state")
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "full":
		info.Full = true
	case "partial":
	default:
		return fmt.Errorf("dialog-info: state %s is neither \"full\" nor \"partial\" (RFC 4235 section 4.1)", quoteValue(s))
	}
	return nil
}

// check refuses a dialog without the id or state RFC 4235 requires.
func (d *DialogElement) check(gotState bool) error {
	switch {
	case d.ID == "":
		return errors.New("dialog-info: a <dialog> without an id (RFC 4235 requires one)")
	case !gotState:
		return fmt.Errorf("dialog-info: dialog %s has no <state>", quoteValue(d.ID))
	case !slices.Contains(dialogStates, d.State):
		return fmt.Errorf("dialog-info: dialog %s: state %s is not one of %s", quoteValue(d.ID), quoteValue(d.State), strings.Join(dialogStates, ", "))
	}
	return nil
}

// ErrNeedFullState is what DialogTracker.Apply returns (wrapped) for partial
// state it cannot apply: versions were skipped, or it has no full state to
// apply it to. RFC 4235 section 4.1: the subscriber SHOULD refresh the
// subscription to get full state.
var ErrNeedFullState = errors.New("refresh the subscription to get full state")

// DialogTracker keeps the dialogs of one Event: dialog subscription across its
// NOTIFYs, applying RFC 4235 section 4.1's versioning: a full document replaces
// the set, a partial one updates it dialog by dialog, and a document whose
// version is not greater than the last applied is a duplicate or stale one.
// Terminated dialogs are dropped, and so are presencebridge's own (DialogElement.Own),
// so its own publications never read back as a call. The zero value is ready;
// one tracker per subscription (Reset for a new one); not safe for concurrent use.
type DialogTracker struct {
	known     bool   // the PBX said something: a document applied, or Clear
	versioned bool   // version is the last applied document's
	version   uint64 // meaningful when versioned
	dialogs   map[string]DialogElement
}

// Apply applies one NOTIFY's document and reports whether it did. A document
// whose version is not greater than the last applied one is ignored: (false,
// nil), nothing changed. A partial document that skips versions (version >
// last+1), or comes before any full one, is not applied either: (false, an
// error wrapping ErrNeedFullState). A partial document that would leave more
// than MaxDialogs dialogs is refused with another error. The first document of
// a subscription may carry any version (Asterisk starts at 0, Kamailio at 1 or
// 2).
func (t *DialogTracker) Apply(info DialogInfo) (bool, error) {
	if t.versioned && info.Version <= t.version {
		return false, nil
	}
	if !info.Full {
		switch {
		case !t.versioned:
			return false, fmt.Errorf("dialog-info version %d: partial state with no full state before it: %w", info.Version, ErrNeedFullState)
		case info.Version-t.version > 1:
			return false, fmt.Errorf("dialog-info version %d after %d: partial state with versions missing: %w", info.Version, t.version, ErrNeedFullState)
		}
	}
	next := make(map[string]DialogElement, len(info.Dialogs))
	if !info.Full {
		for id, d := range t.dialogs {
			next[id] = d
		}
	}
	for _, d := range info.Dialogs {
		switch {
		case d.Own():
		case d.State == DialogTerminated:
			delete(next, d.ID)
		default:
			next[d.ID] = d
		}
	}
	if len(next) > MaxDialogs {
		return false, fmt.Errorf("dialog-info version %d: %d dialogs at once, over the %d limit", info.Version, len(next), MaxDialogs)
	}
	t.dialogs, t.version, t.versioned, t.known = next, info.Version, true, true
	return true, nil
}

// Clear records an empty NOTIFY (ErrNoBody): the PBX knows no dialog of the
// user, so the line is idle. The last version stays, so a stale document
// arriving later is still ignored.
func (t *DialogTracker) Clear() {
	t.dialogs, t.known = nil, true
}

// Reset forgets everything, for a new subscription: the line is unknown again
// and the next document may carry any version.
func (t *DialogTracker) Reset() { *t = DialogTracker{} }

// Line is the user's line from the dialogs kept: LineInCall if any is
// confirmed, else LineRinging if any is trying, proceeding or early (ringing,
// or a call being set up), else LineIdle; LineUnknown before the PBX has said
// anything.
func (t *DialogTracker) Line() presence.Line {
	if !t.known {
		return presence.LineUnknown
	}
	return dialogsLine(t.dialogs)
}

func dialogsLine(dialogs map[string]DialogElement) presence.Line {
	line := presence.LineIdle
	for _, d := range dialogs {
		switch d.State {
		case DialogConfirmed:
			return presence.LineInCall
		case DialogTrying, DialogProceeding, DialogEarly:
			line = presence.LineRinging
		}
	}
	return line
}

// Calls counts the dialogs kept: those not terminated, presencebridge's own left out.
func (t *DialogTracker) Calls() int { return len(t.dialogs) }

// Dialogs returns the dialogs kept, sorted by id.
func (t *DialogTracker) Dialogs() []DialogElement {
	out := make([]DialogElement, 0, len(t.dialogs))
	for _, d := range t.dialogs {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b DialogElement) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Version is the version of the last document applied; ok is false before the first.
func (t *DialogTracker) Version() (v uint64, ok bool) { return t.version, t.versioned }
