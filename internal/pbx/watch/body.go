package watch

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on what a NOTIFY body may hold, so a garbled or hostile PBX cannot make
// presencebridge hold much memory for one user. Real bodies are far below them:
// Kamailio's and Asterisk's dialog-info for one call is about 500 bytes, a PIDF
// document merged from a phone's and presencebridge's publications about 1 KiB.
const (
	// MaxBodySize is the largest NOTIFY body read, in bytes; a larger one is refused.
	MaxBodySize = 64 << 10
	// MaxDialogs is the most <dialog> elements one dialog-info document may carry.
	MaxDialogs = 256
	// maxShown is how much of a bad value an error quotes.
	maxShown = 64
)

// OwnIDPrefix starts the ids presencebridge gives what it publishes itself
// (dialogs, and tuples and persons beside the "teams" tuple and "p1" person of
// today's PIDF): a watcher reading such an element back from the PBX leaves it
// out, so presencebridge never takes its own publication for the PBX's state.
const OwnIDPrefix = "presencebridge"

// ErrNoBody is returned for an empty NOTIFY body (nothing, or white space only).
// RFC 6665 allows a NOTIFY without one, and Kamailio 5.6 sends it when nothing
// is published for the user (no call through it yet, or the publication
// expired): the PBX knows no dialog and no presence of that user.
var ErrNoBody = errors.New("empty body")

// bodyDecoder returns an XML decoder over body after the checks both parsers share:
// not empty (ErrNoBody), not over MaxBodySize. A UTF-8 byte-order mark is
// skipped; besides UTF-8, ISO-8859-1 and US-ASCII declarations are read.
func bodyDecoder(kind string, body []byte) (*xml.Decoder, error) {
	if len(body) > MaxBodySize {
		return nil, fmt.Errorf("%s body of %d bytes: over the %d-byte limit", kind, len(body), MaxBodySize)
	}
	body = bytes.TrimPrefix(body, []byte("\uFEFF"))
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%s: %w", kind, ErrNoBody)
	}
	d := xml.NewDecoder(bytes.NewReader(body))
	d.CharsetReader = bodyCharset
	return d, nil
}

// bodyCharset reads the 8-bit charsets a PBX may declare. ISO-8859-1 maps
// each byte to the code point of the same value; US-ASCII is a subset of both.
func bodyCharset(charset string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "us-ascii", "ascii":
		return in, nil
	case "iso-8859-1", "iso8859-1", "latin1", "latin-1":
		raw, err := io.ReadAll(in) // already bounded by MaxBodySize
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(raw)*2)
		for _, c := range raw {
			out = utf8.AppendRune(out, rune(c))
		}
		return bytes.NewReader(out), nil
	}
	return nil, fmt.Errorf("charset %q is not supported (UTF-8, ISO-8859-1 or US-ASCII)", charset)
}

// outsideRoot checks a token found outside the root element: white space,
// comments, processing instructions and directives (a DOCTYPE) are allowed;
// text is not, and neither is a second root element.
func outsideRoot(kind string, tok xml.Token, rootSeen bool) error {
	switch t := tok.(type) {
	case xml.CharData:
		if len(bytes.TrimSpace(t)) != 0 {
			return fmt.Errorf("%s: text %s outside the root element: not an XML document", kind, quoteValue(string(t)))
		}
	case xml.StartElement:
		if rootSeen {
			return fmt.Errorf("%s: a second root element <%s>", kind, shortText(t.Name.Local))
		}
	}
	return nil
}

// finishDoc reads the rest of the document after its root element.
func finishDoc(kind string, d *xml.Decoder) error {
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		if err := outsideRoot(kind, tok, true); err != nil {
			return err
		}
	}
}

// syntaxError wraps an error of the XML decoder met at depth (the number of
// elements open); the end of the body is a missing root element at depth 0 and a
// truncated document deeper.
func syntaxError(kind string, err error, depth int) error {
	var se *xml.SyntaxError
	if err == io.EOF || errors.As(err, &se) && se.Msg == "unexpected EOF" {
		if depth == 0 {
			return fmt.Errorf("%s: no root element: not an XML document", kind)
		}
		return fmt.Errorf("%s: the document ends before its root element does", kind)
	}
	// The decoder's message may quote a long name from the body: cut it.
	return fmt.Errorf("%s: not XML: %s", kind, shortText(err.Error()))
}

// xmlAttr is the value of the attribute named local: the unqualified one (as RFC
// 4235 and RFC 3863 define them), else one in any namespace.
func xmlAttr(e xml.StartElement, local string) (string, bool) {
	for _, a := range e.Attr {
		if a.Name.Local == local && a.Name.Space == "" {
			return a.Value, true
		}
	}
	for _, a := range e.Attr {
		if a.Name.Local == local && a.Name.Space != "xmlns" {
			return a.Value, true
		}
	}
	return "", false
}

// quoteValue quotes s for an error message, cut to maxShown runes.
func quoteValue(s string) string {
	if utf8.RuneCountInString(s) > maxShown {
		return fmt.Sprintf("%q...", string([]rune(s)[:maxShown]))
	}
	return fmt.Sprintf("%q", s)
}

// shortText is s for an error message: at most 2*maxShown runes, with "..." when
// cut, and what is not printable UTF-8 (control characters, bytes of another
// charset) as U+FFFD, so the message stays one readable log line. Text from a
// body is quoted (quoteValue) instead, unless it is an XML name or the decoder's
// message.
func shortText(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s { // invalid UTF-8 comes as U+FFFD
		if n++; n > 2*maxShown {
			b.WriteString("...")
			break
		}
		if unicode.IsControl(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	return b.String()
}
