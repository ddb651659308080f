package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/testkit"
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
		{[]string{"simulate", "--call", "user00001:user00002:1s:8s"}, exitUsage, "presencebridge simulate: --call needs --kamailio-pbx: the calls go through Kamailio as a small PBX\n"},
		{[]string{"simulate", "--call", "user00001"}, exitUsage, "invalid value \"user00001\" for flag -call: want FROM:TO:AFTER:DURATION, e.g. user00001:user00002:20s:8s\nUsage: presencebridge simulate [flags]\n..."},
		{[]string{"simulate", "--bogus"}, exitUsage, "flag provided but not defined: -bogus\nUsage: presencebridge simulate [flags]\n..."},
		{[]string{"simulate", "--help"}, exitUsage, "Usage: presencebridge simulate [flags]\n..."},
		{[]string{"simulate", "--addr", "192.0.2.1:0"}, exitFailure, "presencebridge simulate: graphsim: Addr \"192.0.2.1:0\" is not a loopback address..."},
		{[]string{"bench", "--deliver", "sip"}, exitFailure, "presencebridge bench: --deliver \"sip\": use http, or leave it out\n"},
		{[]string{"bench", "delivery", "--users", "5"}, exitUsage, "flag provided but not defined: -users\nUsage of bench delivery:\n..."},
		{[]string{"bench", "calls", "--changes", "5"}, exitUsage, "flag provided but not defined: -changes\nUsage of bench calls:\n..."},
		{[]string{"bench", "calls", "--phones", "3"}, exitUsage, "presencebridge bench calls: --phones 3 must be even, from 2 to --watched (1000)\n"},
		{[]string{"bench", "latency", "--cycles", "5"}, exitUsage, "flag provided but not defined: -cycles\nUsage of bench latency:\n..."},
		{[]string{"bench", "latency", "--targets", "ftp"}, exitUsage, "presencebridge bench latency: --targets \"ftp\": use http, sip or http,sip\n"},
		{[]string{"bench", "latency", "--users", "10", "--watch", "20"}, exitUsage, "presencebridge bench latency: --watch 20: use 1 to --users (10); the SIP latency is measured at the watcher\n"},
		{[]string{"bench", "latency", "--rate", "0"}, exitUsage, "presencebridge bench latency: --rate 0: use Teams changes per second above 0, e.g. 50\n"},
		{[]string{"bench", "latency", "--users", "10", "--interval", "10x", "--targets", "http"}, exitFailure, "presencebridge bench latency: the Presence.ini bench latency wrote does not load (check --interval and --budget-requests): ..."},
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

// TestIntegrationDemoCall is `make demo`'s call part in small, with the binary:
// simulate --kamailio-pbx --secret-users writes a Presence.ini with [PBX] Watch
// = dialog and a second account with the client secret; after `login` of the
// device-code account, `run` watches the PBX, a call between the two users
// that account serves (POST /_sim/call) turns both Busy/InACall in Teams, and
// the hang-up brings back what they showed before, as simulate's TEAMS lines say.
func TestIntegrationDemoCall(t *testing.T) {
	testkit.Need(t, "the Kamailio integration test", kamailio.Find)
	dir := t.TempDir()
	var ready, sim testkit.Buffer
	simCmd := exec.Command(binPath, "simulate", "--addr", "127.0.0.1:0", "--users", "3", "--rate", "0", "--interval", "1s",
		"--approve-after", "200ms", "--pbx", "127.0.0.1:0", "--kamailio-pbx", "--secret-users", "2", "--write-config", dir)
	simCmd.Stdout, simCmd.Stderr = &ready, &sim
	if err := simCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { simCmd.Process.Signal(syscall.SIGTERM); simCmd.Wait() })
	waitUntil(t, 30*time.Second, "the simulated tenant's ready line", func() bool { return strings.Contains(ready.String(), "\n") })
	var r simulate.Ready
	if err := json.Unmarshal([]byte(ready.String()), &r); err != nil || r.CallURL == "" {
		t.Fatalf("ready line %q (%v); want one with a callURL", ready.String(), err)
	}
	config := filepath.Join(dir, "Presence.ini")
	if out, err := exec.Command(binPath, "--config", config, "login", "--account", "demo").CombinedOutput(); err != nil {
		t.Fatalf("login --account demo: %v\n%s", err, out)
	}
	var runErr testkit.Buffer
	run := exec.Command(binPath, "--config", config, "run")
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() { run.Process.Kill(); <-exited })
	subscribed := regexp.MustCompile(`"pbxWatch":\{"users":3,"subscribed":3,`)
	waitUntil(t, 30*time.Second, "run watching the 3 users on the PBX", func() bool {
		out, _ := exec.Command(binPath, "--config", config, "status", "--json").Output()
		return subscribed.Match(bytes.Join(bytes.Fields(out), nil))
	})

	resp, err := http.Post(r.CallURL, "application/json", strings.NewReader(`{"from":"user00001","to":"user00002","duration":"2s"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", r.CallURL, resp.Status)
	}
	lines := func(re string) int { return len(regexp.MustCompile(re).FindAllString(sim.String(), -1)) }
	waitUntil(t, 20*time.Second, "both callers Busy/InACall in Teams", func() bool {
		return lines(`(?m)^TEAMS user0000[12]@contoso\.example +Busy/InACall \(setPresence by presencebridge-daemon`) == 2
	})
	waitUntil(t, 20*time.Second, "both callers back in Teams after the hang-up", func() bool {
		return lines(`(?m)^TEAMS user0000[12]@contoso\.example +back to \S+ \(clearPresence by presencebridge-daemon; [0-9.]+ s after the hang-up\)`) == 2
	})
	if n := lines(`(?m)^CALL  user00001@contoso\.example -> user00002@contoso\.example hung up after 2\.0 s$`); n != 1 {
		t.Errorf("%d hang-up lines; want 1:\n%s", n, sim.String())
	}
	run.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("run after SIGINT: %v\n%s", err, runErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("run did not stop within 20 s of SIGINT")
	}
	if n := lines(`(?m)^TEAMS .* refused`); n != 0 {
		t.Errorf("%d writes refused:\n%s", n, sim.String())
	}
}
