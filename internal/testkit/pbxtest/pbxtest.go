// Package pbxtest starts the real PBXs (Asterisk, Kamailio) and test phones
// for tests, beside testkit (which the harnesses' own tests import, so it
// cannot import them).
package pbxtest

import (
	"context"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/asterisk"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/testkit"
)

// Asterisk starts the real Asterisk for t (skipped without it, failed under
// CI=true) with o, in t.TempDir() unless o.Dir is set, and stops it when t ends.
func Asterisk(t testing.TB, o asterisk.Options) *asterisk.Server {
	t.Helper()
	testkit.Need(t, "the Asterisk integration test", asterisk.Find)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := asterisk.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// Kamailio starts the real Kamailio for t (skipped without it, failed under
// CI=true) with o, in t.TempDir() unless o.Dir is set, and stops it when t
// ends (a test that restarts it stops the server Restart returns).
func Kamailio(t testing.TB, o kamailio.Options) *kamailio.Server {
	t.Helper()
	testkit.Need(t, "the Kamailio integration test", kamailio.Find)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := kamailio.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}
