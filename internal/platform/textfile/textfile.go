// Package textfile decodes text files the way Windows editors save them, so that a
// Presence.ini or users file made with Notepad or Excel reads the same as one made
// on Linux.
package textfile

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Encoding names the encoding Decode found.
type Encoding string

// Encodings Decode recognises.
const (
	UTF8        Encoding = "UTF-8"
	UTF8BOM     Encoding = "UTF-8 with BOM"
	UTF16LE     Encoding = "UTF-16 LE"
	UTF16BE     Encoding = "UTF-16 BE"
	Windows1252 Encoding = "Windows-1252"
)

// ErrBinary reports bytes that are not text in any encoding Decode knows.
var ErrBinary = errors.New("not a text file (it holds NUL bytes)")

// Decode returns b as a Go string with "\n" line endings. It reads:
//   - UTF-8 with or without a byte order mark;
//   - UTF-16 LE or BE with a BOM (Notepad's "Unicode" and "Unicode big endian"),
//     and without a BOM when the NUL pattern of ASCII text gives it away;
//   - anything else that is not valid UTF-8 as Windows-1252 (Notepad's "ANSI" on a
//     western-European Windows), so "Jürgen" in a path survives.
//
// CRLF and lone CR line endings become "\n". Text holding NUL bytes after decoding
// gives ErrBinary (someone pointed at the bbolt file, say).
func Decode(b []byte) (string, Encoding, error) {
	var (
		s   string
		enc Encoding
	)
	switch {
	case bytes.HasPrefix(b, []byte{0xEF, 0xBB, 0xBF}):
		s, enc = string(b[3:]), UTF8BOM
		if !utf8.ValidString(s) {
			s = strings.ToValidUTF8(s, "\uFFFD")
		}
	case bytes.HasPrefix(b, []byte{0xFF, 0xFE}):
		s, enc = decodeUTF16(b[2:], false), UTF16LE
	case bytes.HasPrefix(b, []byte{0xFE, 0xFF}):
		s, enc = decodeUTF16(b[2:], true), UTF16BE
	case looksUTF16(b, false):
		s, enc = decodeUTF16(b, false), UTF16LE
	case looksUTF16(b, true):
		s, enc = decodeUTF16(b, true), UTF16BE
	case utf8.Valid(b):
		s, enc = string(b), UTF8
	default:
		s, enc = decode1252(b), Windows1252
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", enc, ErrBinary
	}
	return normalizeNewlines(s), enc, nil
}

// looksUTF16 reports whether b starts like BOM-less UTF-16 ASCII text: every other
// byte of the first few characters is NUL.
func looksUTF16(b []byte, bigEndian bool) bool {
	if len(b) < 4 || len(b)%2 != 0 {
		return false
	}
	n := min(len(b), 64) / 2
	for i := range n {
		hi, lo := b[2*i+1], b[2*i]
		if bigEndian {
			hi, lo = lo, hi
		}
		if hi != 0 || lo == 0 {
			return false
		}
	}
	return true
}

func decodeUTF16(b []byte, bigEndian bool) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		if bigEndian {
			u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
		} else {
			u[i] = uint16(b[2*i+1])<<8 | uint16(b[2*i])
		}
	}
	s := string(utf16.Decode(u))
	if len(b)%2 == 1 { // a stray last byte: keep the text, mark the damage
		s += "\uFFFD"
	}
	return s
}

// cp1252 maps the bytes 0x80..0x9F of Windows-1252; the rest equal Latin-1.
var cp1252 = [32]rune{
	'€', '\uFFFD', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\uFFFD', 'Ž', '\uFFFD',
	'\uFFFD', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\uFFFD', 'ž', 'Ÿ',
}

func decode1252(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) + len(b)/8)
	for _, c := range b {
		switch {
		case c < 0x80:
			sb.WriteByte(c)
		case c < 0xA0:
			sb.WriteRune(cp1252[c-0x80])
		default:
			sb.WriteRune(rune(c))
		}
	}
	return sb.String()
}

func normalizeNewlines(s string) string {
	if strings.IndexByte(s, '\r') < 0 {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}
