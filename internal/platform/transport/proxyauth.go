package transport

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	ntlmssp "github.com/Azure/go-ntlmssp"
)

// The proxy authentication schemes presencebridge answers, as spelled in
// Proxy-Authenticate (RFC 7235; NTLM and Negotiate as in RFC 4559).
const (
	schemeBasic     = "Basic"
	schemeNTLM      = "NTLM"
	schemeNegotiate = "Negotiate"
)

// challenge is one offer of a Proxy-Authenticate header: a scheme and what
// follows it (a token68 such as an NTLM challenge, or auth-params).
type challenge struct {
	scheme string
	data   string
}

type challenges []challenge

// parseChallenges reads Proxy-Authenticate header values. A value may hold
// several challenges separated by commas (`NTLM, Basic realm="a, b"`): a
// comma outside quotes followed by a word without '=' starts a new one.
func parseChallenges(values []string) challenges {
	var out challenges
	for _, v := range values {
		for _, part := range splitOutsideQuotes(v) {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			word, rest, _ := strings.Cut(part, " ")
			if strings.Contains(word, "=") && len(out) > 0 {
				// An auth-param of the challenge before it.
				out[len(out)-1].data += ", " + part
				continue
			}
			out = append(out, challenge{scheme: word, data: strings.TrimSpace(rest)})
		}
	}
	return out
}

func splitOutsideQuotes(s string) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// offers says whether scheme is among the challenges.
func (cs challenges) offers(scheme string) bool {
	for _, c := range cs {
		if strings.EqualFold(c.scheme, scheme) {
			return true
		}
	}
	return false
}

// token returns the decoded token that follows scheme, nil when there is none.
func (cs challenges) token(scheme string) ([]byte, error) {
	for _, c := range cs {
		if strings.EqualFold(c.scheme, scheme) && c.data != "" && !strings.Contains(c.data, "=\"") {
			return base64.StdEncoding.DecodeString(c.data)
		}
	}
	return nil, nil
}

// schemes lists the offered schemes in the proxy's order, each once.
func (cs challenges) schemes() []string {
	var out []string
	for _, c := range cs {
		dup := false
		for _, s := range out {
			dup = dup || strings.EqualFold(s, c.scheme)
		}
		if !dup {
			out = append(out, c.scheme)
		}
	}
	return out
}

// authSession is one NTLM or Negotiate handshake: Step(nil) gives the first
// token, then Step(challenge) the answer to each challenge of the proxy.
type authSession interface {
	Step(challenge []byte) ([]byte, error)
	Close()
}

// ntlmSession is NTLM (NTLMv2, github.com/Azure/go-ntlmssp) with a
// configured user and password; it also serves Negotiate, whose servers
// (Windows, Squid's negotiate_wrapper) accept a raw NTLM token in it.
type ntlmSession struct {
	user, pass string
}

func (s *ntlmSession) Step(ch []byte) ([]byte, error) {
	if ch == nil {
		return ntlmssp.NewNegotiateMessage("", "")
	}
	norm, err := normalizeChallenge(ch)
	if err != nil {
		return nil, err
	}
	return ntlmssp.NewAuthenticateMessage(norm, s.user, s.pass, nil)
}

func (s *ntlmSession) Close() {}

// normalizeChallenge rewrites an NTLM CHALLENGE message (MS-NLMP 2.2.1.2) in
// the full layout go-ntlmssp reads: header, TargetName, flags, server
// challenge, reserved, TargetInfo, then the payload. Older servers send the
// 40-byte layout without TargetInfo (Squid 5's ntlm_fake_auth also gives its
// TargetName an offset past the end); go-ntlmssp would then read payload
// bytes as the TargetInfo field and fail. Fields that point outside the
// message are dropped: neither is needed for an NTLMv2 answer when the
// domain comes with the user name.
func normalizeChallenge(msg []byte) ([]byte, error) {
	const fixed = 48 // the full layout's fields, without the optional Version
	if len(msg) < 32 || !bytes.Equal(msg[:8], []byte("NTLMSSP\x00")) || binary.LittleEndian.Uint32(msg[8:12]) != 2 {
		return nil, errors.New("the proxy's NTLM challenge is not an NTLM CHALLENGE message")
	}
	field := func(at int) []byte {
		if at+8 > len(msg) {
			return nil
		}
		n := int(binary.LittleEndian.Uint16(msg[at:]))
		off := int(binary.LittleEndian.Uint32(msg[at+4:]))
		if n == 0 || off < 32 || off+n > len(msg) {
			return nil
		}
		return msg[off : off+n]
	}
	name := field(12)
	var info []byte
	// The full layout has TargetInfo at 40, and its payload starts at 48 or later.
	if len(msg) >= fixed && (name == nil || int(binary.LittleEndian.Uint32(msg[16:])) >= fixed) {
		if i := field(40); i != nil && int(binary.LittleEndian.Uint32(msg[44:])) >= fixed {
			info = i
		}
	}
	out := make([]byte, fixed, fixed+len(name)+len(info))
	copy(out, msg[:12])        // signature, message type
	copy(out[20:], msg[20:32]) // flags, server challenge
	put := func(at int, data []byte) {
		binary.LittleEndian.PutUint16(out[at:], uint16(len(data)))
		binary.LittleEndian.PutUint16(out[at+2:], uint16(len(data)))
		binary.LittleEndian.PutUint32(out[at+4:], uint32(len(out)))
		out = append(out, data...)
	}
	put(12, name)
	put(40, info)
	return out, nil
}

// choose picks the scheme to answer offers with. With credentials: NTLM,
// then Negotiate (both carry NTLM from the configured user, and are not a
// password in the clear), then Basic unless the proxy just refused it.
// Without: Negotiate, then NTLM, as the service account where the platform
// has integrated authentication (Windows). "" when none fits.
func choose(offers challenges, hasCreds, basicRefused bool) string {
	prefs := []string{schemeNegotiate, schemeNTLM}
	if hasCreds {
		prefs = []string{schemeNTLM, schemeNegotiate}
		if !basicRefused {
			prefs = append(prefs, schemeBasic)
		}
	} else if !integratedAuth {
		return ""
	}
	for _, p := range prefs {
		if offers.offers(p) {
			return p
		}
	}
	return ""
}

// basicAuthorization is the Proxy-Authorization value for Basic (RFC 7617;
// the user and password as UTF-8).
func basicAuthorization(c *proxyCreds) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+c.pass))
}

// authError is a failure on this side of an NTLM or Negotiate handshake: a
// challenge that cannot be answered, or Windows refusing the service account's
// credentials.
type authError struct {
	proxy      string
	scheme     string
	integrated bool
	err        error
}

func (e *authError) Error() string {
	who := ""
	if e.integrated {
		who = " as the service account"
	}
	return fmt.Sprintf("%s authentication%s with proxy %s: %v", e.scheme, who, e.proxy, e.err)
}

func (e *authError) Unwrap() error { return e.err }
