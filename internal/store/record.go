package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Records in the state file are compact and versioned: a version byte, then the
// fields in a fixed order, each a uvarint, a varint, a string (its length as a
// uvarint, then its bytes), a time (Unix nanoseconds as a varint, 0 for the zero
// time) or a bool (one byte). The package that owns a bucket owns its records'
// field order; a new field goes at the end with a new version, and the decoder
// reads every version it ever wrote. Releases before the compact records wrote
// JSON, which starts with '{' (or '"'), never with a version byte: IsJSON tells
// them apart, so old records stay readable until the state file is rewritten
// (Rewrite).

// Record is a record being written.
type Record struct{ b []byte }

// NewRecord starts a record of the given version (1 to 31: never '{' or '"').
func NewRecord(version byte, sizeHint int) *Record {
	b := make([]byte, 1, 1+sizeHint)
	b[0] = version
	return &Record{b: b}
}

// Uint appends an unsigned number.
func (r *Record) Uint(v uint64) *Record { r.b = binary.AppendUvarint(r.b, v); return r }

// Int appends a signed number.
func (r *Record) Int(v int64) *Record { r.b = binary.AppendVarint(r.b, v); return r }

// Str appends a string.
func (r *Record) Str(s string) *Record {
	r.b = binary.AppendUvarint(r.b, uint64(len(s)))
	r.b = append(r.b, s...)
	return r
}

// Time appends a time (its instant; read back in UTC).
func (r *Record) Time(t time.Time) *Record {
	if t.IsZero() {
		return r.Int(0)
	}
	return r.Int(t.UnixNano())
}

// Bool appends a bool.
func (r *Record) Bool(v bool) *Record {
	if v {
		r.b = append(r.b, 1)
	} else {
		r.b = append(r.b, 0)
	}
	return r
}

// Bytes is the encoded record.
func (r *Record) Bytes() []byte { return r.b }

// IsJSON reports a record written as JSON by a release before the compact ones.
func IsJSON(raw []byte) bool { return len(raw) > 0 && (raw[0] == '{' || raw[0] == '"') }

// Reader reads a record's fields in the order they were written. A field past the
// end or a malformed one sets Err and reads as zero, so a decoder reads every
// field and checks Err once.
type Reader struct {
	b       []byte
	version byte
	err     error
}

// ReadRecord starts reading raw.
func ReadRecord(raw []byte) *Reader {
	if len(raw) == 0 {
		return &Reader{err: errors.New("empty record")}
	}
	return &Reader{b: raw[1:], version: raw[0]}
}

// Version is the record's version byte, for decoders reading fields a later
// version added.
func (r *Reader) Version() byte { return r.version }

// Err is the first problem met, with the record's version.
func (r *Reader) Err() error {
	if r.err == nil {
		return nil
	}
	return fmt.Errorf("record version %d: %w", r.version, r.err)
}

func (r *Reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s cut short or malformed", what)
	}
	r.b = nil
}

// Uint reads an unsigned number.
func (r *Reader) Uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Int reads a signed number.
func (r *Reader) Int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Str reads a string.
func (r *Reader) Str() string {
	n := r.Uint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("string")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// Time reads a time, in UTC.
func (r *Reader) Time() time.Time {
	ns := r.Int()
	if ns == 0 || r.err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// Bool reads a bool.
func (r *Reader) Bool() bool {
	if len(r.b) == 0 {
		r.fail("bool")
		return false
	}
	v := r.b[0] != 0
	r.b = r.b[1:]
	return v
}
