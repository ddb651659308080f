package config

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// decodeUserinfo percent-decodes the user name or password of a proxy URL once.
// Its problems never quote the value: what is the password is a secret.
func decodeUserinfo(v, what string) (string, string) {
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && (i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2])) {
			return "", fmt.Sprintf("the %s holds a %% that is not followed by two hex digits; "+
				"the user name and password are percent-decoded once (%%40 is @), so write a %% itself as %%25", what)
		}
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Sprintf("the %s cannot be percent-decoded; write a %% itself as %%25", what)
	}
	if !utf8.ValidString(d) || strings.ContainsAny(d, "\r\n\x00") {
		return "", fmt.Sprintf("the %s is not UTF-8 text after percent-decoding; encode a character such as é as its UTF-8 bytes, %%C3%%A9, or write it as it is", what)
	}
	return d, ""
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
