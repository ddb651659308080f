package redact

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestURL(t *testing.T) {
	stars := Options{Mask: "***"}
	noQuery := Options{Mask: "***", DropQuery: true}
	cases := []struct {
		name string
		in   string
		o    Options
		want string
	}{
		{"password", "http://bob:s3cret@proxy.example:3128", stars, "http://bob:***@proxy.example:3128"},
		{"the caller's mask", "http://bob:s3cret@proxy.example:3128", Options{Mask: "xxxxx"}, "http://bob:xxxxx@proxy.example:3128"},
		{"literal @ : / # ? in the password", "http://dom\\user:p#s?s;w@r/d:x@proxy.example:3128", stars, "http://dom\\user:***@proxy.example:3128"},
		{"percent-encoded password", "socks5h://u:p%40ss%25@[::1]:1080", stars, "socks5h://u:***@[::1]:1080"},
		{"unsupported scheme", "ftp://bob:Pr0xy#Secret@proxy.example:21", stars, "ftp://bob:***@proxy.example:21"},
		{"no scheme", "bob:s3cret@proxy.example:3128", stars, "bob:***@proxy.example:3128"},
		{"empty password", "http://bob:@proxy:1", stars, "http://bob:***@proxy:1"},
		{"user without password", "http://bob@proxy.example:3128", stars, "http://bob@proxy.example:3128"},
		{"no user", "http://proxy.example:3128", stars, "http://proxy.example:3128"},
		{"not a URL", "direct", stars, "direct"},
		{"empty", "", stars, ""},
		{"@ before the scheme", "a:b@c://host", stars, "a:***@c://host"},
		{"a :// in the password of a URL without scheme", "bob:://s3cret@proxy:1", stars, "bob:***@proxy:1"},
		{"an empty scheme", "://bob:s3cret@proxy:1", stars, "://bob:***@proxy:1"},
		{"the query stays", "https://cti.example/presence?key=q-secret", stars, "https://cti.example/presence?key=q-secret"},
		{"the query goes", "https://cti.example/presence?key=q-secret", noQuery, "https://cti.example/presence"},
		{"an @ in the query", "https://cti.example/p?mail=a@b.example&key=q-secret", noQuery, "https://cti.example/p"},
		{"the fragment stays", "https://cti.example/p?key=q-secret#top?x", noQuery, "https://cti.example/p#top?x"},
		{"a ? in the fragment is no query", "https://cti.example/p#a?b", noQuery, "https://cti.example/p#a?b"},
		{"password and query", "https://u:pw@cti.example/p?key=k", noQuery, "https://u:***@cti.example/p"},
		{"an @ in a path hides more, never less", "https://cti.example:8443/users/@me", stars, "https://cti.example:***@me"},
	}
	for _, tc := range cases {
		if got := URL(tc.in, tc.o); got != tc.want {
			t.Errorf("%s: URL(%q, %+v) = %q, want %q", tc.name, tc.in, tc.o, got, tc.want)
		}
	}
}

// TestURLNeverShowsThePassword: whatever the password holds, written between
// the first ':' of the user info and its last '@', it never comes back, and the
// scheme, user and host stay as written.
func TestURLNeverShowsThePassword(t *testing.T) {
	const secret = "Zq9Secret"
	for _, scheme := range []string{"", "http://", "socks5h://", "HTTP://", "ftp://"} {
		for _, user := range []string{"", "bob", `CORP\svc`, "a@b", "p%40q", "é"} {
			for _, password := range []string{"", "@", ":", "/", "#", "?", "%", "p@ss:w/o#r?d;", " x ", "://", "@@::"} {
				for _, host := range []string{"proxy.example:3128", "[::1]:1080", "", "h/", "cti.example/p?k=v#f"} {
					in := scheme + user + ":" + password + secret + "@" + host
					got := URL(in, Options{Mask: "***"})
					if want := scheme + user + ":***@" + host; got != want {
						t.Errorf("URL(%q) = %q, want %q", in, got, want)
					}
				}
			}
		}
	}
}

func TestOneLineAndEndpoint(t *testing.T) {
	if got := OneLine([]byte("  an\r\nerror \xff\tbody ")); got != "an error ? body" {
		t.Errorf("OneLine = %q", got)
	}
	long := OneLine([]byte(strings.Repeat("é", 200)))
	if !strings.HasSuffix(long, "...") || !utf8.ValidString(long) || len(long) > 170 {
		t.Errorf("a long body read as %q", long)
	}
	if got := Endpoint("https://ari:s3cret@pbx:8089/ari/deviceStates/x?api_key=tok"); strings.Contains(got, "s3cret") || strings.Contains(got, "tok") {
		t.Errorf("Endpoint = %q", got)
	}
}
