package graph

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
)

// Reading getPresencesByUserId replies is the client's hot path: 200,000
// users polled every 2 s are about 150 replies of 650 presences a second.
// presenceReply.decodeFast reads the replies Graph sends in one pass without
// reflection, allocating only the strings it keeps; whatever it is not sure
// to read exactly as encoding/json would (an escape in a kept string, a key
// that matches a field only ignoring case, a repeated "value", a type that
// encoding/json would refuse, ...) it leaves to encoding/json, which reads the
// same bytes as before. FuzzPresenceReply checks that both agree.

// fastDecoder is a reply that can be read from its bytes by a fast path;
// decodeFast reports false to have encoding/json read them instead.
type fastDecoder interface {
	decodeFast(b []byte) bool
}

var replyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeReply reads body into out: through out's fast path when it has one
// (the whole body read first, at most maxReply bytes), else streaming with
// encoding/json as Decode reads it (the first JSON value; what follows is
// not read).
func decodeReply(body io.Reader, out any) error {
	fd, ok := out.(fastDecoder)
	if !ok {
		return json.NewDecoder(io.LimitReader(body, maxReply)).Decode(out)
	}
	buf := replyBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 4<<20 {
			buf.Reset()
			replyBufs.Put(buf)
		}
	}()
	buf.Reset()
	_, err := buf.ReadFrom(io.LimitReader(body, maxReply))
	if err == nil && fd.decodeFast(buf.Bytes()) {
		return nil
	}
	var rd io.Reader = bytes.NewReader(buf.Bytes())
	if err != nil { // what encoding/json would have seen streaming: the bytes, then the error
		rd = io.MultiReader(rd, errReader{err})
	}
	return json.NewDecoder(rd).Decode(out)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// decodeFast reads a getPresencesByUserId reply: {"value":[{presence},...]}
// with any other keys (skipped).
func (reply *presenceReply) decodeFast(b []byte) bool {
	s := scanner{b: b}
	s.ws()
	if !s.take('{') {
		return false
	}
	var (
		out  []Presence
		seen bool
	)
	ok := s.members(func(key []byte) bool {
		switch {
		case string(key) == "value":
			if seen {
				return false // a second "value": encoding/json reuses the first one's elements
			}
			seen = true
			var ok bool
			out, ok = s.presences()
			return ok
		case foldsTo(key, "value"):
			return false
		}
		return s.skip(0)
	})
	if !ok {
		return false
	}
	reply.Value, reply.fast, reply.isFast = nil, out, true
	return true
}

// presences reads the value array: presence objects, or null (none).
func (s *scanner) presences() ([]Presence, bool) {
	if s.literal("null") {
		return nil, true
	}
	if !s.take('[') {
		return nil, false
	}
	// Graph writes each presence in 100 bytes or more: room for all without
	// growing, and no more than a full reply holds.
	out := make([]Presence, 0, min((len(s.b)-s.i)/96+1, MaxPresenceIDs))
	s.ws()
	if s.take(']') {
		return out, true
	}
	for {
		s.ws()
		if !s.take('{') {
			return nil, false // null or another type: encoding/json decides
		}
		var p Presence
		ok := s.members(func(key []byte) bool {
			var field *string
			switch string(key) {
			case "id":
				field = &p.ID
			case "availability":
				field = &p.Availability
			case "activity":
				field = &p.Activity
			case "sequenceNumber":
				field = &p.SequenceNumber
			case "outOfOfficeSettings":
				return s.outOfOffice(&p.OutOfOffice)
			default:
				if foldsTo(key, "id", "availability", "activity", "sequenceNumber", "outOfOfficeSettings") {
					return false
				}
				return s.skip(0)
			}
			if s.literal("null") {
				return true // encoding/json leaves the field as it is
			}
			v, ok := s.plainString()
			if ok {
				*field = intern(v)
			}
			return ok
		})
		if !ok {
			return nil, false
		}
		out = append(out, p)
		s.ws()
		if s.take(',') {
			continue
		}
		return out, s.take(']')
	}
}

// outOfOffice reads outOfOfficeSettings: null (not out of office) or an
// object whose isOutOfOffice (true, false or null: as it was) sets *ooo.
func (s *scanner) outOfOffice(ooo *bool) bool {
	if s.literal("null") {
		*ooo = false
		return true
	}
	if !s.take('{') {
		return false
	}
	return s.members(func(key []byte) bool {
		switch {
		case string(key) == "isOutOfOffice":
			switch {
			case s.literal("true"):
				*ooo = true
			case s.literal("false"):
				*ooo = false
			case s.literal("null"):
			default:
				return false
			}
			return true
		case foldsTo(key, "isOutOfOffice"):
			return false
		}
		return s.skip(0)
	})
}

// intern returns Graph's usual availability and activity values without
// allocating; any other value is copied.
func intern(v []byte) string {
	switch string(v) {
	case "Available":
		return "Available"
	case "AvailableIdle":
		return "AvailableIdle"
	case "Away":
		return "Away"
	case "BeRightBack":
		return "BeRightBack"
	case "Busy":
		return "Busy"
	case "BusyIdle":
		return "BusyIdle"
	case "DoNotDisturb":
		return "DoNotDisturb"
	case "Offline":
		return "Offline"
	case "PresenceUnknown":
		return "PresenceUnknown"
	case "InACall":
		return "InACall"
	case "InAConferenceCall":
		return "InAConferenceCall"
	case "Inactive":
		return "Inactive"
	case "InAMeeting":
		return "InAMeeting"
	case "OffWork":
		return "OffWork"
	case "OutOfOffice":
		return "OutOfOffice"
	case "Presenting":
		return "Presenting"
	case "UrgentInterruptionsOnly":
		return "UrgentInterruptionsOnly"
	}
	return string(v)
}

// foldsTo reports whether key matches one of names only ignoring case (or is
// not plain ASCII, where encoding/json's folding is Unicode's): encoding/json
// would fill that field, so the fast path gives up.
func foldsTo(key []byte, names ...string) bool {
	for _, c := range key {
		if c >= 0x80 {
			return true
		}
	}
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return true
		}
	}
	return false
}

// scanner walks JSON text, validating what it skips as encoding/json's
// scanner would; any doubt is a false.
type scanner struct {
	b []byte
	i int
}

// maxSkipDepth bounds the nesting skip follows (encoding/json allows 10,000;
// deeper than this the fast path gives up and encoding/json decides).
const maxSkipDepth = 200

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) take(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// literal takes word (true, false, null) after any whitespace.
func (s *scanner) literal(word string) bool {
	s.ws()
	if !bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		return false
	}
	s.i += len(word)
	return true
}

// members reads the members of an object whose '{' was taken, up to its '}',
// calling member for each key (plain: no escapes) with the scanner before
// the value, which member must consume.
func (s *scanner) members(member func(key []byte) bool) bool {
	s.ws()
	if s.take('}') {
		return true
	}
	for {
		s.ws()
		key, ok := s.plainString()
		if !ok {
			return false
		}
		s.ws()
		if !s.take(':') {
			return false
		}
		s.ws()
		if !member(key) {
			return false
		}
		s.ws()
		if s.take(',') {
			continue
		}
		return s.take('}')
	}
}

// plainString reads a string without escapes, control characters or bytes
// outside ASCII (all of which encoding/json would rewrite) and returns its
// contents, aliasing the input.
func (s *scanner) plainString() ([]byte, bool) {
	s.ws()
	if !s.take('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// skip passes over one JSON value of any kind, checking its syntax.
func (s *scanner) skip(depth int) bool {
	if depth > maxSkipDepth {
		return false
	}
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.skipString()
	case c == '{':
		s.i++
		return s.members(func([]byte) bool { return s.skip(depth + 1) })
	case c == '[':
		s.i++
		s.ws()
		if s.take(']') {
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.take(',') {
				continue
			}
			return s.take(']')
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.skipNumber()
	}
	return false
}

// skipString passes over a string: escapes as JSON allows them, no control
// characters (any other byte passes, as encoding/json's scanner lets it).
func (s *scanner) skipString() bool {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		s.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i >= len(s.b) {
				return false
			}
			e := s.b[s.i]
			s.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if s.i+4 > len(s.b) {
					return false
				}
				for _, h := range s.b[s.i : s.i+4] {
					if !isHex(h) {
						return false
					}
				}
				s.i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipNumber passes over a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) skipNumber() bool {
	digits := func() bool {
		start := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		return s.i > start
	}
	s.take('-')
	if s.take('0') {
		// no more digits may follow a leading zero
	} else if !digits() {
		return false
	}
	if s.take('.') && !digits() {
		return false
	}
	if s.take('e') || s.take('E') {
		if !s.take('+') {
			s.take('-')
		}
		if !digits() {
			return false
		}
	}
	return true
}
