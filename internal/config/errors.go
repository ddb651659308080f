package config

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Error is every problem Load found in one Presence.ini. Its text has one line per
// problem: "Presence.ini:14: [Polling] Interval = \"10x\": not a duration; ...".
type Error struct {
	Path     string // the INI as given to Load
	Problems []Problem
}

// Problem is one thing wrong in the INI.
type Problem struct {
	Line    int    // 1-based; 0 when the problem is about the file as a whole
	Message string // what is wrong and what is allowed; never holds a secret
}

// MaxShownProblems is how many problems Error's text lists; the rest are counted.
// A wrong file (a log, an export) given as Presence.ini has a problem on every
// line, and hundreds of thousands of lines help nobody.
const MaxShownProblems = 50

func (e *Error) Error() string {
	name := filepath.Base(e.Path)
	var b strings.Builder
	for i, p := range e.Problems {
		if i == MaxShownProblems {
			fmt.Fprintf(&b, "\n%s: %d more problems not shown; fix the ones above first (is %s the right file?)", name, len(e.Problems)-i, name)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.format(name))
	}
	return b.String()
}

func (p Problem) format(file string) string {
	if p.Line > 0 {
		return file + ":" + strconv.Itoa(p.Line) + ": " + p.Message
	}
	return file + ": " + p.Message
}

// sortProblems orders problems by line, file-level ones last, keeping the order of
// problems found on the same line.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Line, ps[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
}

// suggest returns the candidate closest to s (case-insensitive Levenshtein) if it is
// close enough to be a likely typo, else "".
func suggest(s string, candidates []string) string {
	best, bestD, bestLimit := "", -1, 0
	ls := strings.ToLower(s)
	for _, c := range candidates {
		d := levenshtein(ls, strings.ToLower(c))
		if bestD < 0 || d < bestD {
			// Allow about one edit in three characters of the longer name.
			best, bestD, bestLimit = c, d, max(2, max(len([]rune(s)), len([]rune(c)))/3)
		}
	}
	if bestD < 0 || bestD > bestLimit {
		return ""
	}
	return best
}

// levenshtein is the edit distance between a and b, counted in runes.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
