// Package testkit holds what the tests of several packages share. Only tests (and
// the test harnesses they use) import it.
package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Tool ends t when err says a tool the test needs is missing: a developer's run
// skips it, but with CI=true (as .ci/run sets after installing every tool) it
// fails, because CI must run every test and never skip one. what names the tests,
// e.g. "the Kamailio tests".
func Tool(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI=true, so %s must run", err, what)
	}
	t.Skipf("%v; skipping %s", err, what)
}

// Need returns the path find gives for a tool the test needs, or ends t as Tool
// does when find cannot find it (e.g. Need(t, "the Kamailio tests", kamailio.Find)).
func Need(t testing.TB, what string, find func() (string, error)) string {
	t.Helper()
	path, err := find()
	Tool(t, what, err)
	return path
}

// CheckToolUnderCI checks a harness's Require: with its tool missing (env, the
// variable that names the tool's path, pointing nowhere) it skips a developer's
// run with a message that holds hint (how to install it), and fails under CI=true.
func CheckToolUnderCI(t *testing.T, env, hint string, require func(testing.TB)) {
	t.Helper()
	t.Setenv(env, filepath.Join(t.TempDir(), "not-installed"))
	t.Setenv("CI", "")
	r := run(t, require)
	if r.skipped == "" || r.failed != "" || !strings.Contains(r.skipped, hint) {
		t.Errorf("without CI: skipped %q, failed %q; want a skip that says %q", r.skipped, r.failed, hint)
	}
	t.Setenv("CI", "true")
	r = run(t, require)
	if r.failed == "" || r.skipped != "" {
		t.Errorf("with CI=true: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
}

// recorder is a testing.TB that records Skipf and Fatalf instead of acting on them.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, a ...any) {
	r.skipped = fmt.Sprintf(format, a...)
	runtime.Goexit() // as testing.T does
}
func (r *recorder) Fatalf(format string, a ...any) {
	r.failed = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

// run calls require on its own goroutine, which Skipf and Fatalf end.
func run(t *testing.T, require func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); require(r) }()
	<-done
	return r
}
