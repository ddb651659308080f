package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// badKeysINI is a Presence.ini with n unknown keys in [General], m [Mapping]
// rules with distinct names, and a wrong known key after them.
func badKeysINI(n, m int) string {
	var b strings.Builder
	b.WriteString(minimal + "[General]\n")
	for i := range n {
		fmt.Fprintf(&b, "Bogus%d = 1\n", i)
	}
	b.WriteString("[Mapping]\n")
	for i := range m {
		fmt.Fprintf(&b, "Busy/Rule%d = oncall\n", i)
	}
	b.WriteString("[Polling]\nInterval = 10x\n")
	return b.String()
}

// TestLoadManyBadKeys: a wrong file with a problem on every line is read to its
// end (a real problem after 20,000 bad keys is still found), but its error
// text lists only the first MaxShownProblems problems and counts the rest.
func TestLoadManyBadKeys(t *testing.T) {
	const n, m = 20_000, 1_200
	_, err := Load(writeINI(t, t.TempDir(), []byte(badKeysINI(n, m))))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Load = %v, want *config.Error", err)
	}
	// n unknown keys, maxOpenKeys [Mapping] rules that are not rules, one
	// "more than 1000 keys" problem, and the Interval.
	if want := n + maxOpenKeys + 2; len(cerr.Problems) != want {
		t.Errorf("%d problems, want %d", len(cerr.Problems), want)
	}
	last := cerr.Problems[len(cerr.Problems)-1]
	if !strings.Contains(last.Message, `[Polling] Interval = "10x"`) {
		t.Errorf("last problem = %q, want the Interval after the bad keys", last.Message)
	}
	tooMany := 0
	for _, p := range cerr.Problems {
		if strings.Contains(p.Message, "[Mapping] has more than 1000 keys") {
			tooMany++
		}
	}
	if tooMany != 1 {
		t.Errorf("%d problems say [Mapping] has too many keys, want 1", tooMany)
	}
	text := err.Error()
	lines := strings.Split(text, "\n")
	if len(lines) != MaxShownProblems+1 {
		t.Fatalf("error text has %d lines, want %d shown problems and a count", len(lines), MaxShownProblems+1)
	}
	want := fmt.Sprintf("Presence.ini: %d more problems not shown; fix the ones above first (is Presence.ini the right file?)", len(cerr.Problems)-MaxShownProblems)
	if lines[MaxShownProblems] != want {
		t.Errorf("last line = %q, want %q", lines[MaxShownProblems], want)
	}
	if !strings.HasPrefix(lines[0], `Presence.ini:5: unknown key "Bogus0" in [General]`) {
		t.Errorf("first line = %q", lines[0])
	}
}

// BenchmarkLoadBadKeys shows that reading grows linearly with the bad keys
// (it was quadratic: 200,000 took 74 s).
func BenchmarkLoadBadKeys(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := writeINI(b, b.TempDir(), []byte(badKeysINI(n, 0)))
			b.ResetTimer()
			for range b.N {
				if _, err := Load(path); err == nil {
					b.Fatal("loaded")
				}
			}
		})
	}
}
