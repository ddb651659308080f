package simulate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencebridge/presencebridge/internal/config"
	"github.com/presencebridge/presencebridge/internal/delivery"
	"github.com/presencebridge/presencebridge/internal/pbx/cti"
	"github.com/presencebridge/presencebridge/internal/pbx/sip"
	"github.com/presencebridge/presencebridge/internal/presence"
	"github.com/presencebridge/presencebridge/internal/sim/kamailio"
	"github.com/presencebridge/presencebridge/internal/sim/simulate"
	"github.com/presencebridge/presencebridge/internal/testkit"
	"github.com/presencebridge/presencebridge/internal/users"
)

// A bad command line is a *UsageError: the flag package's own complaints are
// printed already, the command's are for the caller to print.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		printed bool
		msg     string // the error's text
		stderr  string // in what Main printed
	}{
		{[]string{"--bogus"}, true, "flag provided but not defined: -bogus", "Usage: presencebridge simulate [flags]"},
		{[]string{"--help"}, true, flag.ErrHelp.Error(), "write Presence.ini, users.csv and the CA certificate"},
		{[]string{"--auth", "password"}, false, `--auth "password": use devicecode or secret`, ""},
	} {
		var stdout, stderr bytes.Buffer
		err := simulate.Main(tc.args, &stdout, &stderr)
		var usage *simulate.UsageError
		if !errors.As(err, &usage) || usage.Printed != tc.printed || err.Error() != tc.msg {
			t.Errorf("%v: %#v, want a UsageError %q (printed: %v)", tc.args, err, tc.msg, tc.printed)
		}
		if !strings.Contains(stderr.String(), tc.stderr) || (tc.stderr == "" && stderr.Len() > 0) || stdout.Len() > 0 {
			t.Errorf("%v: stdout %q, stderr %q; want nothing on stdout and %q on stderr", tc.args, stdout.String(), stderr.String(), tc.stderr)
		}
	}
}

// simulation is a Run of the simulate command in this process.
type simulation struct {
	ready  simulate.Ready
	cfg    *config.Config
	stderr *testkit.Buffer
	stop   func() error // ends Run and returns its error
}

func startSimulate(t *testing.T, args ...string) *simulation {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &simulation{stderr: &testkit.Buffer{}}
	done := make(chan error, 1)
	go func() {
		err := simulate.Run(ctx, append([]string{"--addr", "127.0.0.1:0", "--rate", "0", "--write-config", dir}, args...), pw, s.stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	s.stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { s.stop() })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v\n%s", err, s.stderr)
	}
	go io.Copy(io.Discard, pr)
	if err := json.Unmarshal([]byte(line), &s.ready); err != nil {
		t.Fatalf("ready line %q: %v", line, err)
	}
	if s.cfg, err = config.Load(filepath.Join(dir, "Presence.ini")); err != nil {
		t.Fatalf("the written Presence.ini: %v", err)
	}
	return s
}

// waitLine waits until the simulation printed a line that starts with prefix
// on stderr and returns that line.
func (s *simulation) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, l := range strings.Split(s.stderr.String(), "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulate never printed a line starting %q:\n%s", prefix, s.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// simulate --pbx prints its ready line, writes a configuration that reaches the
// tenant and names its CTI receiver, and the receiver prints what arrives with
// how long after the Teams change it came.
func TestSimulateWithHTTPReceiver(t *testing.T) {
	s := startSimulate(t, "--users", "4", "--auth", "secret", "--pbx", "127.0.0.1:0")
	r := s.ready
	if r.Users != 4 || !strings.HasPrefix(r.URL, "https://127.0.0.1:") || r.GraphURL != r.URL+"/v1.0" || r.Authority != r.URL+"/"+r.TenantID {
		t.Errorf("ready line %+v", r)
	}
	if s.cfg.Microsoft.LoginURL != r.URL || s.cfg.Microsoft.GraphURL != r.GraphURL || s.cfg.Proxy.CAFile != r.CAFile ||
		len(s.cfg.Accounts) != 1 || s.cfg.Accounts[0].TenantID != r.TenantID || s.cfg.Accounts[0].Auth != config.AuthSecret {
		t.Errorf("written config: [Microsoft] %+v, CAFile %s, accounts %+v; want the ready line's tenant, a secret account", s.cfg.Microsoft, s.cfg.Proxy.CAFile, s.cfg.Accounts)
	}
	list, _, err := users.Load(s.cfg.UsersFile)
	if err != nil || len(list) != 4 {
		t.Fatalf("users file: %d users, %v; want 4", len(list), err)
	}
	if !strings.HasPrefix(s.cfg.HTTP.URL, "http://127.0.0.1:") {
		t.Fatalf("[HTTP] URL %q, want the receiver", s.cfg.HTTP.URL)
	}

	// The tenant's TLS chains to the CA file the ready line names.
	pem, err := os.ReadFile(r.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	post := func(body string) int {
		t.Helper()
		resp, err := client.Post(s.cfg.HTTP.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	upn := list[1].UPN
	if code := post("not json"); code != http.StatusBadRequest {
		t.Errorf("a body that is no document: %d, want 400", code)
	}
	ctl, err := client.Post(r.URL+"/_sim/presence", "application/json",
		strings.NewReader(`{"upn":"`+upn+`","availability":"Busy","activity":"InACall"}`))
	if err != nil {
		t.Fatal(err)
	}
	ctl.Body.Close()
	if ctl.StatusCode/100 != 2 {
		t.Fatalf("the tenant's control API refused a presence change: %s", ctl.Status)
	}
	doc, _ := json.Marshal(cti.Document{UPN: upn, State: "oncall", Note: "In a call", Reason: "change",
		Teams: cti.Teams{Availability: "Busy", Activity: "InACall"}})
	if code := post(string(doc)); code != http.StatusNoContent {
		t.Errorf("a document: %d, want 204", code)
	}
	if line := s.waitLine(t, "HTTP  "+upn); !strings.Contains(line, `oncall   "In a call"`) || !strings.Contains(line, "(Teams Busy/InACall; ") || !strings.HasSuffix(line, " s after the Teams change)") {
		t.Errorf("printed %q; want the document and its latency from the Teams change", line)
	}
	if err := s.stop(); err != nil {
		t.Errorf("Run after its context ended: %v", err)
	}
	if _, err := client.Post(s.cfg.HTTP.URL, "application/json", strings.NewReader(string(doc))); err == nil {
		t.Error("the receiver still answers after simulate stopped")
	}
	if _, err := os.Stat(r.CAFile); err != nil {
		t.Errorf("the CA file the ready line names: %v", err)
	}
}

// TestIntegrationSimulateKamailio: simulate --kamailio runs a real Kamailio, names
// it in the written [SIP] and prints the NOTIFYs its watchers get for what is
// published there.
func TestIntegrationSimulateKamailio(t *testing.T) {
	testkit.Need(t, "the Kamailio integration test", kamailio.Find)
	s := startSimulate(t, "--users", "3", "--auth", "devicecode", "--kamailio", "2")
	if !strings.HasPrefix(s.cfg.SIP.Server, "127.0.0.1:") {
		t.Fatalf("[SIP] Server %q, want the Kamailio simulate runs", s.cfg.SIP.Server)
	}
	if a := s.cfg.Accounts; len(a) != 1 || a[0].ID != "demo" || a[0].Auth != config.AuthDeviceCode || a[0].Username == "" {
		t.Errorf("accounts %+v, want demo signing in with the device code", a)
	}
	p, err := sip.New(sip.Options{Settings: s.cfg.SIP, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	list, _, err := users.Load(s.cfg.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	u := list[1] // watched: simulate watches the first two users
	now := time.Now().UTC()
	errs := p.Send(context.Background(), []delivery.Item{{User: u, Seq: 1, Reason: "change", Queued: now,
		State:  presence.State{UPN: u.UPN, Availability: presence.Busy, Activity: presence.ActInACall, Seen: now, Changed: now},
		Mapped: presence.Mapped{State: "oncall", Basic: "open", Activity: "on-the-phone", Note: "In a call"}}})
	if errs[0] != nil {
		t.Fatalf("PUBLISH to simulate's Kamailio: %v", errs[0])
	}
	line := s.waitLine(t, "SIP   "+u.SIPURI+" ")
	if !strings.Contains(line, "NOTIFY basic=open   activity=on-the-phone") || !strings.Contains(line, `note="In a call"`) {
		t.Errorf("printed %q; want the published state as the watcher got it", line)
	}
}
