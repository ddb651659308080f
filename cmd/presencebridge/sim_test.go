package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// simulate and bench (internal/sim) exit and complain as the product's own
// commands do: 2 for a bad command line, 1 for a failure, each message once and
// prefixed with the command's name.
func TestSimCommandsExit(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string // exactly, or the start of it when it ends in "..."
	}{
		{[]string{"simulate", "--auth", "password"}, exitUsage, "presencebridge simulate: --auth \"password\": use devicecode or secret\n"},
		{[]string{"simulate", "--bogus"}, exitUsage, "flag provided but not defined: -bogus\nUsage: presencebridge simulate [flags]\n..."},
		{[]string{"simulate", "--help"}, exitUsage, "Usage: presencebridge simulate [flags]\n..."},
		{[]string{"simulate", "--addr", "192.0.2.1:0"}, exitFailure, "presencebridge simulate: graphsim: Addr \"192.0.2.1:0\" is not a loopback address..."},
		{[]string{"bench", "--deliver", "sip"}, exitFailure, "presencebridge bench: --deliver \"sip\": use http, or leave it out\n"},
		{[]string{"bench", "delivery", "--users", "5"}, exitUsage, "flag provided but not defined: -users\nUsage of bench delivery:\n..."},
		{[]string{"bench", "calls", "--changes", "5"}, exitUsage, "flag provided but not defined: -changes\nUsage of bench calls:\n..."},
		{[]string{"bench", "calls", "--phones", "3"}, exitUsage, "presencebridge bench calls: --phones 3 must be even, from 2 to --watched (1000)\n"},
	} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(binPath, tc.args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		code := exitCodeOf(cmd.Run())
		prefix, open := strings.CutSuffix(tc.stderr, "...")
		ok := stderr.String() == tc.stderr || open && strings.HasPrefix(stderr.String(), prefix)
		if code != tc.code || !ok || stdout.Len() > 0 || strings.Count(stderr.String(), "presencebridge ") > 1 {
			t.Errorf("presencebridge %s: exit %d, stdout %q, stderr %q; want exit %d and stderr %q",
				strings.Join(tc.args, " "), code, stdout.String(), stderr.String(), tc.code, tc.stderr)
		}
	}
}
