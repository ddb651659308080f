package textfile

import (
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want string
		enc  Encoding
	}{
		{"UTF-8", []byte("a=ü\n"), "a=ü\n", UTF8},
		{"UTF-8 BOM CRLF", []byte("\xEF\xBB\xBFa=1\r\nb=2\r\n"), "a=1\nb=2\n", UTF8BOM},
		{"UTF-16 LE BOM", []byte("\xFF\xFEa\x00=\x00\xFC\x00\r\x00\n\x00"), "a=ü\n", UTF16LE},
		{"UTF-16 BE BOM", []byte("\xFE\xFF\x00a\x00=\x00\xFC\x00\n"), "a=ü\n", UTF16BE},
		{"UTF-16 LE no BOM", []byte("a\x00=\x001\x00\n\x00"), "a=1\n", UTF16LE},
		{"UTF-16 LE surrogate pair", []byte("\xFF\xFE\x3D\xD8\x00\xDE"), "😀", UTF16LE},
		{"Windows-1252", []byte("J\xFCrgen \x80\r"), "Jürgen €\n", Windows1252},
		{"lone CR", []byte("a\rb"), "a\nb", UTF8},
		{"empty", nil, "", UTF8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, enc, err := Decode(tc.in)
			if err != nil || got != tc.want || enc != tc.enc {
				t.Errorf("Decode = %q, %s, %v; want %q, %s", got, enc, err, tc.want, tc.enc)
			}
		})
	}
	if _, _, err := Decode([]byte("bolt\x00\x00\x00\x02\xED\xDA")); !errors.Is(err, ErrBinary) {
		t.Errorf("binary: err = %v", err)
	}
}
